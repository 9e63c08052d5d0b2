"""captioner in the browser: drop in photos, get captions in one or several languages side by side,
see where the model looked, export them.

    streamlit run app.py

Each caption language has its own model, found in the working folder as the repository ships them
(captioner.serving.api.shipped_model_paths): English `mymodel.h5` + `tokenizer.pkl`, Chinese and German
`models/zh/` and `models/de/`. Environment variables point elsewhere:

- CAPTIONER_MODEL and CAPTIONER_TOKENIZER: the English model and its vocabulary;
- CAPTIONER_MODEL_<LANG> and CAPTIONER_TOKENIZER_<LANG>, e.g. CAPTIONER_MODEL_ZH: another language's;
- CAPTIONER_ENCODER_WEIGHTS: the ImageNet weights file (or `imagenet`) for every language.

The page offers the languages whose two files exist and says how to get the others; the sidebar
can load another model for any language. This file is only the page: images, decoding and
exports live in the captioner package (captioner/serving/gallery.py).
"""

from __future__ import annotations

import re
import sys
import time
from collections import Counter
from pathlib import Path

import streamlit as st

from captioner.artifacts.scores import score_tables
from captioner.data.images import IMAGE_EXTENSIONS, ImageSource
from captioner.decoding.options import DEFAULT_DECODING, Caption, DecodeOptions
from captioner.errors import CaptionerError, WeightsError
from captioner.serving import gallery
from captioner.serving.attention_maps import overlay, word_label
from captioner.serving.shipped import env_names, recipe_path

UPLOAD_TYPES = [suffix.lstrip(".") for suffix in IMAGE_EXTENSIONS]  # HEIC/AVIF too, where the plugins are installed
GRID_COLUMNS = 3
STRIP_WIDTH = 150  # px per small attention map

st.set_page_config(page_title="captioner · describe your photos", page_icon=":material/photo_library:", layout="wide")


@st.cache_resource(show_spinner="Loading the captioning model…", max_entries=6)
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


def use_chosen_model() -> None:
    """The form's Load button in a public app: the operator-configured model the visitor picked."""
    state = st.session_state
    chosen = gallery.chosen_model(state.choices, state.get("form_choice"))
    if chosen:  # None: not one of the operator's models, so nothing is opened
        lang, paths = chosen
        state.models = {**state.models, lang: paths}
        state.languages = list(dict.fromkeys([*state.get("languages", []), lang]))


def use_typed_paths() -> None:
    """The form's Load button with CAPTIONER_ALLOW_MODEL_PATHS=1: the paths the (trusted) user typed."""
    state = st.session_state
    lang = state.form_lang
    state.models = {**state.models, lang: gallery.ModelPaths(state.form_model.strip(), state.form_tokenizer.strip(),
                                                             state.form_weights.strip())}
    state.languages = list(dict.fromkeys([*state.get("languages", []), lang]))


def choice_label(key: str) -> str:
    """'中文 · Chinese · zh-v2/mymodel.h5': the language and the model's folder name, no server path."""
    lang, paths = gallery.chosen_model(st.session_state.choices, key)
    model = Path(paths.model)
    return f"{gallery.language_label(lang)} · {model.parent.name or '.'}/{model.name}"


def model_form(models: dict[str, gallery.ModelPaths], lang: str, expanded: bool = False) -> None:
    """Sidebar form to switch this session to another model. Visitors pick among the models the operator
    configured; typing server paths is an operator switch (CAPTIONER_ALLOW_MODEL_PATHS=1), off by default."""
    if not gallery.visitors_may_type_paths():
        choices = st.session_state.choices
        keys = [gallery.choice_key(code, i) for code, options in choices.items()
                for i, paths in enumerate(options) if not gallery.missing_files(paths)]
        if all(gallery.chosen_model(choices, key)[1] in models.values() for key in keys):
            return  # every available model is already in use: nothing to choose
        with st.sidebar.expander("Choose another model", expanded=expanded), st.form("load_model", border=False):
            st.selectbox("Model", keys, format_func=choice_label, key="form_choice")
            st.form_submit_button("Load", on_click=use_chosen_model)
        return
    current = models[lang]
    with st.sidebar.expander("Load another model", expanded=expanded), st.form("load_model", border=False):
        st.selectbox("Language", list(models), index=list(models).index(lang), format_func=gallery.language_label,
                     key="form_lang")
        st.text_input("Model (.h5)", current.model, key="form_model")
        st.text_input("Tokenizer (.pkl)", current.tokenizer, key="form_tokenizer")
        st.text_input("Encoder weights", current.encoder_weights, key="form_weights",
                      help="'imagenet' uses Keras's cache ($KERAS_HOME/models), or a .h5 file path.")
        st.form_submit_button("Load", on_click=use_typed_paths)


def model_panel(loaded: dict[str, gallery.LoadedModel]) -> None:
    """Sidebar: what is loaded for each language, and its scores from the model card."""
    st.sidebar.header("Model" if len(loaded) == 1 else "Models")
    for lang, item in loaded.items():
        model, paths = item.captioner, item.paths
        info = model.info
        rows, cols = model.grid_shape
        units = "characters" if model.vocab.tokenization == "chars" else "words"
        st.sidebar.markdown(f"**{md(Path(paths.model).name)}** + {md(Path(paths.tokenizer).name)} · "
                            f"{gallery.language_label(lang)}  \n"
                            f"encoder **{info.encoder}** ({rows}×{cols} attention grid, {info.image_size} px)  \n"
                            f"vocabulary **{len(model.vocab):,}** {units} ({info.lang})")
        scores = score_tables(info.extra)
        if scores:
            st.sidebar.caption("Scores from the model card")
            st.sidebar.dataframe({name: {m: round(v, 3) for m, v in table.items()} for name, table in scores.items()})
        else:
            st.sidebar.caption("No dev/test scores in this model file.")
        recipe = (info.extra or {}).get("config")
        if recipe:
            with st.sidebar.expander("Training recipe"):
                st.json(recipe, expanded=False)
        st.sidebar.caption(f"Loaded at {time.strftime('%H:%M:%S', time.localtime(item.loaded_at))} in "
                           f"{item.seconds:.1f} s; shared by every visitor.")


def decoding_controls() -> DecodeOptions:
    st.sidebar.header("Decoding")
    search = st.sidebar.radio("Search", ["Beam search", "Greedy"], horizontal=True,
                              help="Greedy takes the likeliest word each step; beam search keeps several "
                                   "candidate captions and returns the best whole sentence.")
    greedy = search == "Greedy"
    beam = st.sidebar.slider("Beam width", 2, 10, DEFAULT_DECODING.beam_size, disabled=greedy)
    n_best = st.sidebar.slider("Alternatives (n-best)", 1, 5, 3, disabled=greedy,
                               help="How many candidate captions to keep per image.")
    grounded = st.sidebar.toggle("Name what the classifier sees", DEFAULT_DECODING.grounding == "constrained",
                                 help="Each caption must name one of the things the ImageNet classifier is sure of "
                                      "(EfficientNet-Lite models, English): constrained beam search.")
    return DecodeOptions(beam_size=1 if greedy else beam, n_best=1 if greedy else n_best,
                         grounding="constrained" if grounded else DEFAULT_DECODING.grounding)


def missing_model(error: CaptionerError, lang: str, paths: gallery.ModelPaths) -> None:
    """A panel instead of a traceback: what is missing and how to get it."""
    st.error(f"**No captioning model could be loaded.**\n\n{md(str(error))}", icon=":material/block:")
    if isinstance(error, WeightsError):
        fix = ("The image encoder needs its ImageNet weights. With a network Keras downloads them on first "
               "use. Offline, copy the file named above into `$KERAS_HOME/models/` (default "
               "`~/.keras/models/`), or start the app with `CAPTIONER_ENCODER_WEIGHTS=path/to/file.h5`.")
    else:
        model_var, tokenizer_var = env_names(lang)
        fix = (f"The app loads `{paths.model}` and `{paths.tokenizer}` (from `{Path.cwd()}`).\n"
               f"- Train them: `captioner train --config {recipe_path(lang)}` writes both files;\n"
               f"- or point the app at yours: `{model_var}=path/mymodel.h5 "
               f"{tokenizer_var}=path/tokenizer.pkl streamlit run app.py`.")
    st.markdown(fix)


def language_selector(models: dict[str, gallery.ModelPaths]) -> tuple[list[str], list[str]]:
    """Pills for the languages whose model files are here (the first one picked at the start), and a
    note for each of the others saying how to get it. Returns the offered and the picked languages."""
    offered = [lang for lang, paths in models.items() if not gallery.missing_files(paths)]
    for lang in models:
        if lang not in offered:
            st.caption(f":material/translate: **{gallery.language_label(lang)}** is not available: "
                       f"`{gallery.missing_files(models[lang])[0]}` not found; {gallery.how_to_get(lang)}.")
    if not offered:
        return [], []
    # Kept through reruns; languages whose files went away since are dropped before the widget is drawn.
    st.session_state.languages = [lang for lang in st.session_state.get("languages", offered[:1]) if lang in offered]
    return offered, st.pills("Caption languages", offered, selection_mode="multi", format_func=gallery.language_label,
                    key="languages", help="Pick several to see each photo's captions side by side. Every "
                                          "language has its own model; the photo is encoded once for all.")


def load_models(models: dict[str, gallery.ModelPaths], languages: list[str]
                ) -> tuple[dict[str, gallery.LoadedModel], dict[str, CaptionerError]]:
    """The loaded model of each language, and the error of each that could not be loaded."""
    loaded, failed = {}, {}
    for lang in languages:
        paths = models[lang]
        try:
            loaded[lang] = get_model(paths.model, paths.tokenizer, paths.encoder_weights)
        except CaptionerError as error:
            failed[lang] = error
    return loaded, failed


def chosen_images() -> list[tuple[str, str, ImageSource]]:
    """(key, name, source) for each uploaded file and picked example, in page order."""
    left, right = st.columns([3, 2], gap="large")
    uploads = left.file_uploader("Upload photos", type=UPLOAD_TYPES, accept_multiple_files=True,
                                 help="JPEG, PNG, WebP, HEIC, TIFF, BMP or GIF (first frame); several at once is fine.")
    picked = right.pills("…or try an example", list(gallery.EXAMPLES), selection_mode="multi", key="examples",
                         help="  \n".join(f"{label}: {credit}" for label, (_, credit) in gallery.EXAMPLES.items()))
    right.caption("Example photos: scikit-image's public-domain samples.")
    items = [(f"upload:{f.file_id}", f.name, f.getvalue()) for f in uploads or []]
    items += [(f"example:{label}", f"{label} (example)", get_example(label)) for label in picked or []]
    return items


def caption_all(loaded: dict[str, gallery.LoadedModel], options: DecodeOptions, items) -> list[gallery.ImageResult]:
    """Captions for the chosen images in every picked language; only new images (or new languages or
    settings) are computed on a rerun."""
    state = (tuple((lang, item.paths) for lang, item in loaded.items()), options)
    if st.session_state.get("results_for") != state:
        st.session_state.results_for, st.session_state.results = state, {}
    done = st.session_state.results
    todo = [(key, name, source) for key, name, source in items if key not in done]
    if todo:
        bar = st.progress(0.0, text=f"Captioning {len(todo)} image{'s' * (len(todo) > 1)}…")
        with st.spinner("Looking at your photos…"):
            fresh = gallery.caption_images(
                {lang: item.captioner for lang, item in loaded.items()}, [(name, source) for _, name, source in todo],
                options, progress=lambda n, total: bar.progress(n / total, text=f"Captioned {n} of {total}"))
        bar.empty()
        done.update({key: result for (key, _, _), result in zip(todo, fresh, strict=True)})
    st.session_state.results = {key: done[key] for key, _, _ in items}  # forget removed images
    return [done[key] for key, _, _ in items]


def caption_block(index: int, lang: str, caption: Caption, labelled: bool) -> None:
    """One language's caption of a card: text, confidence, copyable alt text, n-best list."""
    if labelled:
        st.caption(f":material/translate: {gallery.language_label(lang)}")
    with st.container(key=f"caption_{index}_{lang}"):
        st.markdown(f"**{md(caption.text)}**")
    st.progress(caption.confidence, text=f"confidence {caption.confidence:.0%}")
    st.code(gallery.alt_text(caption), language=None, wrap_lines=True)  # has a copy button
    if caption.grounded_by:
        st.caption(f":material/label: names {md(', '.join(caption.grounded_by))}, which the classifier sees")
    if caption.alternatives:
        with st.expander(f"{len(caption.ranked)} best captions"):
            st.markdown("\n".join(f"{rank}. {md(alt.text)} — {alt.confidence:.0%}"
                                  for rank, alt in enumerate(caption.ranked, 1)))


def card(index: int, result: gallery.ImageResult, languages: list[str]) -> None:
    """An image with its caption in each language: below it for one language, beside it for several."""
    with st.container(border=True, key=f"card_{index}"):
        several = len(languages) > 1
        slots = (st.columns([2] + [3] * len(languages)) if several
                 else [st.container() for _ in range(len(languages) + 1)])
        with slots[0]:
            if result.image is not None:
                first = next(iter(result.captions.values()), None)
                st.image(result.image, width="stretch", alt=gallery.alt_text(first) if first else result.name)
            st.caption(md(result.name))
            tags = next(iter(result.captions.values())).tags if result.captions else []
            if tags:  # what the encoder's ImageNet classifier sees, from the same pass as the captions
                with st.container(key=f"tags_{index}", horizontal=True, gap="small"):
                    for tag in tags:
                        st.badge(f"{tag.name} {tag.probability:.0%}", color="blue")
            for note in result.notes:
                st.info(note, icon=":material/info:")
            if result.error:
                with st.container(key=f"error_{index}"):
                    st.error(result.error, icon=":material/broken_image:")
                return
        for slot, lang in zip(slots[1:], languages, strict=True):
            with slot:
                caption_block(index, lang, result.captions[lang], labelled=several)


def captions_tab(results: list[gallery.ImageResult], languages: list[str]) -> None:
    """A grid of cards, three a row; one a row when each card holds several languages side by side."""
    per_row = GRID_COLUMNS if len(languages) == 1 else 1
    for start in range(0, len(results), per_row):
        for column, (index, result) in zip(st.columns(per_row), enumerate(results[start:start + per_row], start),
                                           strict=False):
            with column:
                card(index, result, languages)


def word_labels(words: list[str]) -> list[str]:
    """Unique button labels for a caption's words: a repeated word gets its count, "a", "a (2)"."""
    seen: Counter[str] = Counter()
    labels = []
    for word in words:
        seen[word] += 1
        labels.append(word if seen[word] == 1 else f"{word} ({seen[word]})")
    return labels


def explain_tab(results: list[gallery.ImageResult], loaded: dict[str, gallery.LoadedModel]) -> None:
    """Show-Attend-Tell style: where the decoder looked for each word, in one of the picked languages."""
    languages = list(loaded)
    lang = languages[0]
    if len(languages) > 1:
        lang = st.radio("Language", languages, horizontal=True, format_func=gallery.language_label,
                        key="explain_lang")
    grid_shape = loaded[lang].captioner.grid_shape
    captioned = [r for r in results if lang in r.captions and r.captions[lang].words]
    if not captioned:
        st.info("No captions to explain yet.")
        return
    chosen = st.selectbox("Image", range(len(captioned)), format_func=lambda i: captioned[i].name)
    result = captioned[chosen]
    caption = result.captions[lang]
    words, attention = caption.words, caption.attention
    labels = word_labels(words)
    label = st.segmented_control("Word", labels, default=labels[0], key=f"word_{chosen}_{lang}_{caption.text}")
    picked = labels.index(label) if label else 0
    left, right, _ = st.columns(3)
    left.image(result.image, caption="input", width="stretch")
    right.image(overlay(result.image, attention[picked], grid_shape),
                caption=f"attention for “{word_label(caption, picked)}”", width="stretch")
    st.caption("Every word, in order (bright = where the model looked):")
    small = result.image.copy()
    small.thumbnail((2 * STRIP_WIDTH, 2 * STRIP_WIDTH))
    st.image([overlay(small, weights, grid_shape) for weights in attention], caption=words, width=STRIP_WIDTH)


def export_tab(results: list[gallery.ImageResult], languages: list[str]) -> None:
    """Downloads and a table with one row per image and language."""
    left, right, _ = st.columns([1, 1, 3])
    left.download_button("Download CSV", gallery.to_csv(results), "captions.csv", "text/csv", on_click="ignore",
                         icon=":material/download:")
    right.download_button("Download JSON", gallery.to_json(results), "captions.json", "application/json",
                          on_click="ignore", icon=":material/download:")
    st.dataframe([{"file": row["file"], "language": row["language"], "caption": row["caption"],
                   "confidence": row["confidence"], "problem": row["error"]} for row in gallery.export_rows(results)],
                 width="stretch", hide_index=True)
    st.caption("Alt text, one image a line (copy button at the right):")
    tag = (lambda lang: f" ({lang})") if len(languages) > 1 else (lambda lang: "")
    st.code("\n".join(f"{r.name}{tag(lang)}: {gallery.alt_text(caption)}" for r in results
                      for lang, caption in r.captions.items()), language=None, wrap_lines=True)


def main() -> None:
    st.title(":material/photo_library: captioner")
    st.markdown("Describe your photos in words, *Show, Attend and Tell* style, and see where the model "
                "looked for each word.")
    choices = st.session_state.setdefault("choices", gallery.model_choices())
    models = st.session_state.setdefault("models", {lang: options[0] for lang, options in choices.items()})
    offered, picked = language_selector(models)
    # With no model files at all, loading English says precisely what is missing.
    loaded, failed = load_models(models, picked if offered else ["en"])
    if failed and not loaded:
        lang, error = next(iter(failed.items()))
        model_form(models, lang, expanded=True)
        missing_model(error, lang, models[lang])
        st.stop()
    if not loaded:
        model_form(models, offered[0])
        st.info("Pick at least one caption language above.", icon=":material/translate:")
        return
    for lang, error in failed.items():
        st.error(f"**{gallery.language_label(lang)}** could not be loaded: {md(str(error))}", icon=":material/block:")
    model_panel(loaded)
    model_form(models, next(iter(loaded)))
    options = decoding_controls()

    items = chosen_images()
    if not items:
        st.info("Drop one or more photos above, or pick an example, to get captions.", icon=":material/upload:")
        return
    results = caption_all(loaded, options, items)
    good = sum(bool(r.captions) for r in results)
    st.caption(f"{good} of {len(results)} image{'s' * (len(results) > 1)} captioned"
               + (f"; {len(results) - good} could not be read." if good < len(results) else "."))
    captions, explain, export = st.tabs(["Captions", "Explain", "Export"])
    with captions:
        captions_tab(results, list(loaded))
    with explain:
        explain_tab(results, loaded)
    with export:
        export_tab(results, list(loaded))


main()
