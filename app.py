"""captioner in the browser: drop in photos, get captions, see where the model looked, export them.

    streamlit run app.py

The model is `mymodel.h5` + `tokenizer.pkl` in the working folder unless CAPTIONER_MODEL,
CAPTIONER_TOKENIZER, CAPTIONER_ENCODER_WEIGHTS or the sidebar say otherwise. This file is only
the page: images, decoding and exports live in the captioner package (captioner/gallery.py).
"""

from __future__ import annotations

import re
import sys
import time
from collections import Counter
from pathlib import Path

import streamlit as st

from captioner import gallery
from captioner.attention import overlay
from captioner.decode import DecodeOptions
from captioner.errors import CaptionerError, WeightsError
from captioner.images import ImageSource

UPLOAD_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "gif"]
GRID_COLUMNS = 3
STRIP_WIDTH = 150  # px per small attention map

st.set_page_config(page_title="captioner · describe your photos", page_icon=":material/photo_library:", layout="wide")


@st.cache_resource(show_spinner="Loading the captioning model…", max_entries=3)
def get_model(model: str, tokenizer: str, encoder_weights: str) -> gallery.LoadedModel:
    """Loaded once per process for each set of paths, then shared by every session and rerun."""
    loaded = gallery.load_captioner(gallery.ModelPaths(model, tokenizer, encoder_weights))
    print(f"captioner app: loaded model {model} ({tokenizer}) in {loaded.seconds:.1f}s", file=sys.stderr, flush=True)
    return loaded


@st.cache_resource(show_spinner=False)
def get_example(label: str):
    return gallery.load_example(label)


def md(text: str) -> str:
    """Text shown verbatim inside Markdown (file names may hold *, _ or [ ])."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~$])", r"\\\1", text)


def model_form(current: gallery.ModelPaths, expanded: bool = False) -> None:
    """Sidebar form to switch this session to another model + tokenizer."""
    with st.sidebar.expander("Load another model", expanded=expanded), st.form("load_model", border=False):
        model = st.text_input("Model (.h5)", current.model)
        tokenizer = st.text_input("Tokenizer (.pkl)", current.tokenizer)
        weights = st.text_input("Encoder weights", current.encoder_weights,
                                help="'imagenet' uses Keras's cache ($KERAS_HOME/models), or a .h5 file path.")
        if st.form_submit_button("Load"):
            st.session_state.paths = gallery.ModelPaths(model.strip(), tokenizer.strip(), weights.strip())
            st.rerun()


def model_panel(loaded: gallery.LoadedModel) -> None:
    """Sidebar: what is loaded, and its scores from the model card."""
    model, paths = loaded.captioner, loaded.paths
    info = model.info
    rows, cols = model.grid_shape
    st.sidebar.header("Model")
    st.sidebar.markdown(f"**{md(Path(paths.model).name)}** + {md(Path(paths.tokenizer).name)}  \n"
                        f"encoder **{info.encoder}** ({rows}×{cols} attention grid, {info.image_size} px)  \n"
                        f"vocabulary **{len(model.vocab):,}** words ({info.lang})")
    scores = gallery.model_scores(info.extra)
    if scores:
        st.sidebar.caption("Scores from the model card")
        st.sidebar.dataframe({name: {m: round(v, 3) for m, v in table.items()} for name, table in scores.items()})
    else:
        st.sidebar.caption("No dev/test scores in this model file.")
    recipe = (info.extra or {}).get("config")
    if recipe:
        with st.sidebar.expander("Training recipe"):
            st.json(recipe, expanded=False)
    st.sidebar.caption(f"Loaded at {time.strftime('%H:%M:%S', time.localtime(loaded.loaded_at))} "
                       f"in {loaded.seconds:.1f} s; shared by every visitor.", help=str(Path(paths.model).resolve()))


def decoding_controls() -> DecodeOptions:
    st.sidebar.header("Decoding")
    search = st.sidebar.radio("Search", ["Beam search", "Greedy"], horizontal=True,
                              help="Greedy takes the likeliest word each step; beam search keeps several "
                                   "candidate captions and returns the best whole sentence.")
    greedy = search == "Greedy"
    beam = st.sidebar.slider("Beam width", 2, 10, 3, disabled=greedy)
    n_best = st.sidebar.slider("Alternatives (n-best)", 1, 5, 3, disabled=greedy,
                               help="How many candidate captions to keep per image.")
    return DecodeOptions(beam_size=1 if greedy else beam, n_best=1 if greedy else n_best)


def missing_model(error: CaptionerError, paths: gallery.ModelPaths) -> None:
    """A panel instead of a traceback: what is missing and how to get it."""
    st.error(f"**No captioning model could be loaded.**\n\n{md(str(error))}", icon=":material/block:")
    if isinstance(error, WeightsError):
        fix = ("The image encoder needs its ImageNet weights. With a network Keras downloads them on first "
               "use. Offline, copy the file named above into `$KERAS_HOME/models/` (default "
               "`~/.keras/models/`), or start the app with `CAPTIONER_ENCODER_WEIGHTS=path/to/file.h5`.")
    else:
        fix = (f"The app loads `{paths.model}` and `{paths.tokenizer}` (from `{Path.cwd()}`).\n"
               "- Train them: `captioner train --config configs/flickr8k.yaml` writes both files;\n"
               "- or point the app at yours: `CAPTIONER_MODEL=path/mymodel.h5 "
               "CAPTIONER_TOKENIZER=path/tokenizer.pkl streamlit run app.py`;\n"
               "- or use **Load another model** in the sidebar.")
    st.markdown(fix)


def chosen_images() -> list[tuple[str, str, ImageSource]]:
    """(key, name, source) for each uploaded file and picked example, in page order."""
    left, right = st.columns([3, 2], gap="large")
    uploads = left.file_uploader("Upload photos", type=UPLOAD_TYPES, accept_multiple_files=True,
                                 help="JPEG, PNG, WebP, BMP or GIF (first frame); several at once is fine.")
    picked = right.pills("…or try an example", list(gallery.EXAMPLES), selection_mode="multi", key="examples",
                         help="  \n".join(f"{label}: {credit}" for label, (_, credit) in gallery.EXAMPLES.items()))
    right.caption("Example photos: scikit-image's public-domain samples.")
    items = [(f"upload:{f.file_id}", f.name, f.getvalue()) for f in uploads or []]
    items += [(f"example:{label}", f"{label} (example)", get_example(label)) for label in picked or []]
    return items


def caption_all(loaded: gallery.LoadedModel, options: DecodeOptions, items) -> list[gallery.ImageResult]:
    """Captions for the chosen images; only new images (or new settings) are computed on a rerun."""
    state = (loaded.paths, options)
    if st.session_state.get("results_for") != state:
        st.session_state.results_for, st.session_state.results = state, {}
    done = st.session_state.results
    todo = [(key, name, source) for key, name, source in items if key not in done]
    if todo:
        bar = st.progress(0.0, text=f"Captioning {len(todo)} image{'s' * (len(todo) > 1)}…")
        with st.spinner("Looking at your photos…"):
            fresh = gallery.caption_images(
                loaded.captioner, [(name, source) for _, name, source in todo], options,
                progress=lambda n, total: bar.progress(n / total, text=f"Captioned {n} of {total}"))
        bar.empty()
        done.update({key: result for (key, _, _), result in zip(todo, fresh, strict=True)})
    st.session_state.results = {key: done[key] for key, _, _ in items}  # forget removed images
    return [done[key] for key, _, _ in items]


def card(index: int, result: gallery.ImageResult) -> None:
    with st.container(border=True, key=f"card_{index}"):
        if result.image is not None:
            st.image(result.image, width="stretch", alt=result.alt_text or result.name)
        st.caption(md(result.name))
        if result.error:
            with st.container(key=f"error_{index}"):
                st.error(result.error, icon=":material/broken_image:")
            return
        caption = result.caption
        with st.container(key=f"caption_{index}"):
            st.markdown(f"**{md(caption.text)}**")
        st.progress(caption.confidence, text=f"confidence {caption.confidence:.0%}")
        for note in result.notes:
            st.info(note, icon=":material/info:")
        st.code(result.alt_text, language=None, wrap_lines=True)  # has a copy button
        if len(caption.alternatives) > 1:
            with st.expander(f"{len(caption.alternatives)} best captions"):
                st.markdown("\n".join(f"{rank}. {md(alt.text)} — {alt.confidence:.0%}"
                                      for rank, alt in enumerate(caption.alternatives, 1)))


def captions_tab(results: list[gallery.ImageResult]) -> None:
    for start in range(0, len(results), GRID_COLUMNS):
        for column, (index, result) in zip(st.columns(GRID_COLUMNS), enumerate(results[start:start + GRID_COLUMNS],
                                                                                 start), strict=False):
            with column:
                card(index, result)


def word_labels(words: list[str]) -> list[str]:
    """Unique button labels for a caption's words: a repeated word gets its count, "a", "a (2)"."""
    seen: Counter[str] = Counter()
    labels = []
    for word in words:
        seen[word] += 1
        labels.append(word if seen[word] == 1 else f"{word} ({seen[word]})")
    return labels


def explain_tab(results: list[gallery.ImageResult], grid_shape: tuple[int, int]) -> None:
    """Show-Attend-Tell style: where the decoder looked for each word."""
    captioned = [r for r in results if r.caption and r.caption.words]
    if not captioned:
        st.info("No captions to explain yet.")
        return
    chosen = st.selectbox("Image", range(len(captioned)), format_func=lambda i: captioned[i].name)
    result = captioned[chosen]
    words, attention = result.caption.words, result.caption.attention
    labels = word_labels(words)
    label = st.segmented_control("Word", labels, default=labels[0], key=f"word_{chosen}_{result.caption.text}")
    picked = labels.index(label) if label else 0
    left, right, _ = st.columns(3)
    left.image(result.image, caption="input", width="stretch")
    right.image(overlay(result.image, attention[picked], grid_shape), caption=f"attention for “{words[picked]}”",
                width="stretch")
    st.caption("Every word, in order (bright = where the model looked):")
    small = result.image.copy()
    small.thumbnail((2 * STRIP_WIDTH, 2 * STRIP_WIDTH))
    st.image([overlay(small, weights, grid_shape) for weights in attention], caption=words, width=STRIP_WIDTH)


def export_tab(results: list[gallery.ImageResult]) -> None:
    left, right, _ = st.columns([1, 1, 3])
    left.download_button("Download CSV", gallery.to_csv(results), "captions.csv", "text/csv", on_click="ignore",
                         icon=":material/download:")
    right.download_button("Download JSON", gallery.to_json(results), "captions.json", "application/json",
                          on_click="ignore", icon=":material/download:")
    st.dataframe([{"file": r.name, "caption": r.caption.text if r.caption else "",
                   "confidence": round(r.caption.confidence, 3) if r.caption else None,
                   "problem": r.error or ""} for r in results], width="stretch", hide_index=True)
    st.caption("Alt text, one image a line (copy button at the right):")
    st.code("\n".join(f'{r.name}: {r.alt_text}' for r in results if r.caption), language=None, wrap_lines=True)


def main() -> None:
    st.title(":material/photo_library: captioner")
    st.markdown("Describe your photos in words, *Show, Attend and Tell* style, and see where the model "
                "looked for each word.")
    paths = st.session_state.setdefault("paths", gallery.ModelPaths.from_env())
    try:
        loaded = get_model(paths.model, paths.tokenizer, paths.encoder_weights)
    except CaptionerError as error:
        model_form(paths, expanded=True)
        missing_model(error, paths)
        st.stop()
    model_panel(loaded)
    model_form(paths)
    options = decoding_controls()

    items = chosen_images()
    if not items:
        st.info("Drop one or more photos above, or pick an example, to get captions.", icon=":material/upload:")
        return
    results = caption_all(loaded, options, items)
    good = sum(r.caption is not None for r in results)
    st.caption(f"{good} of {len(results)} image{'s' * (len(results) > 1)} captioned"
               + (f"; {len(results) - good} could not be read." if good < len(results) else "."))
    captions, explain, export = st.tabs(["Captions", "Explain", "Export"])
    with captions:
        captions_tab(results)
    with explain:
        explain_tab(results, loaded.captioner.grid_shape)
    with export:
        export_tab(results)


main()
