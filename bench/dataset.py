"""The benchmark database: pgbench data at a chosen scale plus one text-heavy table.

pgbench's tables are numbers and blank padding, which compress far better than real
data. The ``docs`` table adds prose-like text (Zipf-distributed pseudo-words in
sentences drawn from a pool larger than zstd's default window), about 3.3 MB of dump
text per pgbench scale unit, so compression ratios resemble a real application
database. Everything is generated from a fixed seed: the same scale gives the same data.
"""

from __future__ import annotations

import itertools
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

DOCS_ROWS_PER_SCALE = 3600
SENTENCE_POOL = 120_000
VOCABULARY = 6000

_SYLLABLES = (
    "ba", "be", "bi", "bo", "bu", "da", "de", "di", "do", "ka", "ke", "ki", "ko", "la", "le", "li", "lo",
    "lu", "ma", "me", "mi", "mo", "na", "ne", "ni", "no", "pa", "pe", "po", "ra", "re", "ri", "ro", "sa",
    "se", "si", "so", "ta", "te", "ti", "to", "va", "ve", "vi", "za", "zo", "an", "en", "in", "on", "ar",
    "er", "or", "al", "el", "il", "st", "tr", "pr", "gr",
)
_FUNCTION_WORDS = (
    "the", "of", "and", "to", "a", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on",
    "not", "he", "this", "are", "or", "his", "from", "at",
)


def _words(rng: random.Random) -> list[str]:
    words = list(_FUNCTION_WORDS)
    seen = set(words)
    while len(words) < VOCABULARY:
        word = "".join(rng.choice(_SYLLABLES) for _ in range(rng.choice((1, 2, 2, 3, 3, 4))))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


def _sentences(rng: random.Random) -> list[str]:
    words = _words(rng)
    # Zipf-like word frequencies, as in natural language
    cumulative = list(itertools.accumulate(1.0 / (rank + 1) for rank in range(len(words))))
    pool = []
    for _ in range(SENTENCE_POOL):
        picked = rng.choices(words, cum_weights=cumulative, k=rng.randint(6, 22))
        sentence = " ".join(picked)
        pool.append(sentence[0].upper() + sentence[1:] + rng.choice((".", ".", ".", "?", "!")))
    return pool


def docs_rows(rows: int, seed: int = 7) -> Iterator[bytes]:
    """COPY text lines for the docs table, in batches."""
    rng = random.Random(seed)
    pool = _sentences(rng)
    authors = [f"{rng.choice(pool).split()[0].lower()}.{rng.choice(pool).split()[-1].lower().rstrip('.?!')}"
               for _ in range(2000)]
    statuses = ("draft", "published", "published", "published", "archived")
    batch: list[str] = []
    for i in range(1, rows + 1):
        paragraphs = [" ".join(rng.choices(pool, k=rng.randint(2, 6))) for _ in range(rng.randint(1, 4))]
        body = "\\n\\n".join(paragraphs)
        title = rng.choice(pool)[:80]
        created = f"20{rng.randint(15, 24):02d}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} " \
                  f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}+00"
        meta = f'{{"views": {rng.randint(0, 100000)}, "lang": "en", "status": "{rng.choice(statuses)}"}}'
        batch.append(f"{i}\t{rng.choice(authors)}\t{title}\t{body}\t{created}\t{meta}\n")
        if len(batch) == 2000:
            yield "".join(batch).encode()
            batch = []
    if batch:
        yield "".join(batch).encode()


DOCS_DDL = """
CREATE TABLE docs (
    id integer PRIMARY KEY,
    author text NOT NULL,
    title text NOT NULL,
    body text NOT NULL,
    created_at timestamptz NOT NULL,
    meta jsonb NOT NULL
);
"""


def build(psql: list[str], pgbench: list[str], env: dict[str, str], database: str, scale: int,
          log: Path) -> None:
    """Create ``database`` with pgbench data at ``scale`` and the docs table."""
    with open(log, "ab") as out:
        subprocess.run([*psql, "-d", "postgres", "-c", f'CREATE DATABASE "{database}"'], env=env, check=True,
                       stdout=out, stderr=out)
        subprocess.run([*pgbench, "-i", "-s", str(scale), "-q", "-I", "dtGp", database], env=env, check=True,
                       stdout=out, stderr=out)
        subprocess.run([*psql, "-d", database, "-c", DOCS_DDL], env=env, check=True, stdout=out, stderr=out)
        copy = subprocess.Popen([*psql, "-d", database, "-c", "COPY docs FROM STDIN"], env=env,
                                stdin=subprocess.PIPE, stdout=out, stderr=out)
        assert copy.stdin is not None
        for chunk in docs_rows(scale * DOCS_ROWS_PER_SCALE):
            copy.stdin.write(chunk)
        copy.stdin.close()
        if copy.wait() != 0:
            raise RuntimeError(f"COPY into docs failed (see {log})")
        subprocess.run([*psql, "-d", database, "-c", "VACUUM ANALYZE"], env=env, check=True, stdout=out, stderr=out)
