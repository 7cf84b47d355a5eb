"""A varied, seeded corpus for the quality-filter parity benchmark (`quality_parity.py`).

Documents are mixes of blocks: prose paragraphs and hard-wrapped lines from public-domain Project
Gutenberg books (`/work/shared/data/dedup/nltk_gutenberg_throughput/`), web boilerplate (menus,
cookie and policy notices, "enable JavaScript"), bullet lists, code, tables, short lines, repeated
lines and paragraphs, non-English text (French, German, Spanish, Russian, Greek, Arabic, Hebrew,
Hindi, Chinese, Japanese), curly quotes and contractions, ellipsis lines, lorem ipsum, citations,
hashtags, URLs, very long words, emoji, odd whitespace, and empty or whitespace-only documents.

Two disjoint sets: `tuning` (seed 1, the first half of the books, template variant A) to develop
against, `report` (seed 2, the other books, variant B) to report on.

    python bench/quality_corpus.py --set report --docs 20000 --out /tmp/q.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

BOOKS = Path("/work/shared/data/dedup/nltk_gutenberg_throughput")
TUNING_BOOKS = ["austen-emma", "austen-persuasion", "blake-poems", "bryant-stories", "burgess-busterbrown",
                "carroll-alice", "chesterton-ball", "austen-sense"]
REPORT_BOOKS = ["chesterton-brown", "chesterton-thursday", "edgeworth-parents", "melville-moby_dick",
                "milton-paradise", "shakespeare-caesar", "shakespeare-hamlet", "shakespeare-macbeth", "whitman-leaves"]

FOREIGN = {
    "fr": ["Le chat dort sur le canapé depuis ce matin.", "Nous avons visité le musée avec nos enfants l'été dernier.",
           "Il faut qu'on parle de l'avenir de l'entreprise.", "Les résultats de l'enquête seront publiés demain."],
    "de": ["Die Straßenbahn fährt heute wegen Bauarbeiten nicht.", "Wir haben uns über das schöne Wetter gefreut.",
           "Können Sie mir bitte den Weg zum Bahnhof zeigen?", "Das Ergebnis der Untersuchung überraschte alle."],
    "es": ["¿Dónde está la biblioteca municipal?", "El año pasado viajamos por toda la costa del norte.",
           "¡Qué sorpresa verte aquí después de tanto tiempo!", "Los niños jugaban en el parque hasta el anochecer."],
    "ru": ["Мы долго гуляли по набережной и разговаривали.", "Этот город известен своими старыми мостами.",
           "Вчера шёл сильный дождь, и мы остались дома.", "Пожалуйста, закройте окно, становится холодно."],
    "el": ["Το πρωί πήγαμε στην αγορά για φρούτα.", "Η θάλασσα ήταν ήρεμη και ζεστή."],
    "ar": ["ذهبنا إلى السوق في الصباح الباكر.", "هذه المدينة مشهورة بجسورها القديمة.", "هل يمكنك مساعدتي في هذا؟"],
    "he": ["הלכנו לשוק מוקדם בבוקר.", "העיר הזאת מפורסמת בגשרים הישנים שלה."],
    "hi": ["हम सुबह जल्दी बाज़ार गए।", "यह शहर अपने पुराने पुलों के लिए प्रसिद्ध है।"],
    "zh": ["我们早上去了市场。", "这座城市以古老的桥梁而闻名。", "你能帮我一下吗？", "今天天气很好，我们去公园散步吧。"],
    "ja": ["私たちは朝早く市場に行きました。", "この町は古い橋で有名です。", "手伝ってもらえますか？"],
}
BOILERPLATE = [
    "Home | About Us | Contact | Blog", "Skip to main content", "Menu", "Search", "Log in", "Sign up for our newsletter",
    "This website uses cookies to improve your experience.", "We use cookies to ensure you get the best experience.",
    "By continuing you agree to our Terms of Use and Privacy Policy.", "Read our cookie policy.",
    "Please enable JavaScript to view the comments powered by Disqus.", "You must have JavaScript enabled to use this form.",
    "© 2024 Example Media Group. All rights reserved.", "Share this: Facebook Twitter Email", "Posted by admin",
    "Tags: news, local, weather", "Previous post", "Next post »", "Leave a comment", "Related articles",
    "Copyright © Example Inc.", "Powered by WordPress", "Click here to subscribe!", "Read more...", "Load more…",
    "Your use of this site is subject to the privacy policy.", "Accept all cookies", "JavaScript is disabled.",
]
CODE = [
    "def main():\n    for i in range(10):\n        print(i)\n\nif __name__ == \"__main__\":\n    main()",
    "function init() {\n  var x = document.getElementById('app');\n  x.innerHTML = \"Hello\";\n}",
    "#include <stdio.h>\nint main(void) {\n    printf(\"hi\\n\");\n    return 0;\n}",
    "SELECT id, name FROM users WHERE age > 30 ORDER BY name;",
    "<div class=\"nav\"><a href=\"/\">Home</a></div>",
    "$ pip install --upgrade package\n$ export PATH=$HOME/bin:$PATH",
    "# Configuration\n# ------------\nkey = value  # comment\n## section ##",
    "body { margin: 0; padding: 0; }\n.header { color: #333; }",
]
LONG_CHARS = "abcdefghijklmnopqrstuvwxyz"
EMOJI = ["😀", "🎉", "👍🏽", "❤️", "🚀", "🙏", "🔥", "😂"]
CITATIONS = ["[1]", "[2]", "[12]", "[edit]", "[citation needed]", "[]"]
LOREM = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt."
ODD_WS = ["\u00a0", "\t", "\u3000", "\u2009", "  ", "\u200b", "\r", "\x0b", "\x1c", "\u2028", "\u0085"]


def _load(books: list[str]) -> tuple[list[str], list[str]]:
    """(sentences, hard-wrapped lines) of the books."""
    sents, lines = [], []
    for b in books:
        raw = (BOOKS / f"{b}.txt").read_text("utf-8", errors="replace")
        lines += [ln.strip() for ln in raw.splitlines() if ln.strip()]
        flat = re.sub(r"\s+", " ", raw)
        sents += [s.strip() for s in re.split(r"(?<=[.!?])\s+(?=[A-Z\"'])", flat) if 10 < len(s.strip()) < 400]
    return sents, lines


class Gen:
    """One set's document generator."""

    def __init__(self, which: str) -> None:
        self.variant = "A" if which == "tuning" else "B"
        self.rng = random.Random(1 if which == "tuning" else 2)
        self.sents, self.lines = _load(TUNING_BOOKS if which == "tuning" else REPORT_BOOKS)

    # -- blocks ----------------------------------------------------------------------------------

    def prose(self) -> str:
        r = self.rng
        paras = []
        for _ in range(r.choice([1, 1, 1, 2, 2, 3, 4])):
            i = r.randrange(len(self.sents))
            paras.append(" ".join(self.sents[i:i + r.randint(1, 5)]))
        return "\n\n".join(paras) if r.random() < 0.6 else "\n".join(paras)

    def wrapped(self) -> str:
        i = self.rng.randrange(len(self.lines))
        return "\n".join(self.lines[i:i + self.rng.randint(2, 30)])

    def boiler(self) -> str:
        return "\n".join(self.rng.choice(BOILERPLATE) for _ in range(self.rng.randint(1, 8)))

    def bullets(self) -> str:
        r = self.rng
        mark = r.choice(["• ", "- ", "* ", "1. ", "  - ", "-", "· ", "◦ "] if self.variant == "A"
                        else ["• ", "- ", "– ", "+ ", "   • ", "> ", "▪ "])
        items = []
        for _ in range(r.randint(2, 20)):
            s = r.choice(self.sents)
            items.append(mark + (s if r.random() < 0.5 else " ".join(s.split()[: r.randint(1, 6)])))
        return "\n".join(items)

    def code(self) -> str:
        return self.rng.choice(CODE)

    def table(self) -> str:
        r = self.rng
        rows = ["Name | Age | City"] + [f"{r.choice(['Ann', 'Bo', 'Cy', 'Di'])} | {r.randint(18, 90)} | "
                                        f"{r.choice(['Paris', 'Oslo', 'Lima'])}" for _ in range(r.randint(2, 12))]
        return "\n".join(rows)

    def short_lines(self) -> str:
        r = self.rng
        return "\n".join(" ".join(r.choice(self.sents).split()[: r.randint(1, 4)]) for _ in range(r.randint(3, 25)))

    def repeated(self) -> str:
        r = self.rng
        unit = r.choice([r.choice(self.sents), self.boiler(), r.choice(self.sents) + " " + r.choice(self.sents), r.choice(BOILERPLATE)])
        sep = r.choice(["\n", "\n\n", " "])
        return sep.join([unit] * r.randint(2, 8))

    def foreign(self) -> str:
        r = self.rng
        lang = r.choice(list(FOREIGN))
        return ("" if lang in ("zh", "ja") else " ").join(r.choice(FOREIGN[lang]) for _ in range(r.randint(2, 12)))

    def quotes(self) -> str:
        s = self.prose()
        return s.replace('"', "“", 1).replace('"', "”", 1).replace("'", "’")

    def ellipsis(self) -> str:
        r = self.rng
        return "\n".join(" ".join(r.choice(self.sents).split()[: r.randint(2, 9)]) + r.choice(["...", "…", " ...", "....", "."])
                         for _ in range(r.randint(1, 10)))

    def lorem(self) -> str:
        return LOREM if self.rng.random() < 0.5 else LOREM.lower().replace("lorem ipsum", "Lorem Ipsum")

    def noise(self) -> str:
        r = self.rng
        kind = r.randrange(9)
        if kind == 0:
            return "".join(r.choice(LONG_CHARS) for _ in range(r.choice([50, 999, 1001, 1500])))
        if kind == 1:
            return " ".join("#" + r.choice(self.sents).split()[0].strip(".,;:!?\"'") for _ in range(r.randint(1, 15)))
        if kind == 2:
            return " ".join(r.choice(EMOJI) for _ in range(r.randint(1, 20)))
        if kind == 3:
            return r.choice(self.sents) + " " + r.choice(CITATIONS) + " " + r.choice(self.sents) + r.choice(CITATIONS)
        if kind == 4:
            return f"Visit https://example.org/{r.randint(1, 999)}/page?id={r.randint(1, 99)} or mail info@example.com."
        if kind == 5:
            return f"Price: ${r.randint(1, 99)}.{r.randint(0, 99):02d} (save {r.randint(5, 50)}%) on {r.randint(1, 12)}/{r.randint(1, 28)}/2024 at 5 p.m. e.g. U.S. Dr. Smith's store."
        if kind == 6:
            return r.choice(self.sents).replace(" ", r.choice(ODD_WS), r.randint(1, 4))
        if kind == 7:
            return "I'm sure you're right, but we can't and won't go; they'd've said it's ours, isn't it? Don't ya think?"
        return "..." if r.random() < 0.5 else "— " + r.choice(self.sents) + " —"

    BLOCKS = ("prose", "wrapped", "boiler", "bullets", "code", "table", "short_lines", "repeated", "foreign",
              "quotes", "ellipsis", "lorem", "noise")
    WEIGHTS = (30, 10, 8, 6, 3, 2, 5, 5, 4, 5, 3, 0.6, 6)

    def doc(self) -> str:
        r = self.rng
        x = r.random()
        if x < 0.01:
            return ""
        if x < 0.015:
            return r.choice([" ", "\n\n", "\t \n", "\u3000"])
        if x < 0.02:
            return " ".join(r.choice(EMOJI) for _ in range(r.randint(1, 30)))
        blocks = r.choices(self.BLOCKS, self.WEIGHTS, k=r.choice([1, 2, 2, 3, 3, 4, 5, 6, 8]))
        sep = r.choice(["\n\n", "\n", "\n\n", "\r\n", "\n \n"])
        text = sep.join(getattr(self, b)() for b in blocks)
        if r.random() < 0.05:
            text = "  " + text + "\n\n "
        return text


def generate(which: str, n: int) -> list[str]:
    """`n` documents of the `tuning` or `report` set."""
    g = Gen(which)
    return [g.doc() for _ in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", choices=["tuning", "report"], default="report")
    ap.add_argument("--docs", type=int, default=20000)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    with open(a.out, "w", encoding="utf-8") as f:
        for i, t in enumerate(generate(a.set, a.docs)):
            f.write(json.dumps({"id": f"{a.set}-{i}", "text": t}, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
