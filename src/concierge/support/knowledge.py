"""Knowledge answers: retrieval over policy and knowledge documents, with citations.

Documents (``{id, title, content}``) are cut into chunks along their markdown headings;
chunks are indexed with BM25 (``bm25s``) and, when an embedding function is injected, with
dense vectors too; the two rankings are fused by reciprocal rank. Answers always name the
document ids they come from, so a customer (or an operator) can check the source.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bm25s
import numpy as np

from concierge.models.engine import ChatHub

EmbedFn = Callable[[list[str]], Any]  # texts -> (n, d) vectors (list of lists or array)

_HEADING = re.compile(r"^(#{1,6})\s+(.*)$", re.M)
_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    "a an and are as at be by can do does for from has have how i if in is it its me my of on or our "
    "should so that the their them then there this to was we what when which who will with you your".split()
)


@dataclass
class Document:
    id: str
    title: str
    content: str


@dataclass
class Chunk:
    doc_id: str
    title: str
    section: str
    text: str


@dataclass
class Hit:
    doc_id: str
    title: str
    section: str
    text: str
    score: float


@dataclass
class KnowledgeAnswer:
    text: str
    citations: list[str]
    hits: list[Hit] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"answer": self.text, "citations": self.citations, "sources": [h.doc_id for h in self.hits]}


def chunk_document(doc: Document, max_chars: int = 1200) -> list[Chunk]:
    """Split on markdown headings; merge tiny sections and split long ones on paragraphs."""
    sections: list[tuple[str, str]] = []
    positions = [(m.start(), m.group(2).strip()) for m in _HEADING.finditer(doc.content)]
    if not positions or positions[0][0] > 0:
        positions.insert(0, (0, ""))
    for i, (start, heading) in enumerate(positions):
        end = positions[i + 1][0] if i + 1 < len(positions) else len(doc.content)
        body = doc.content[start:end].strip()
        if body:
            sections.append((heading, body))
    chunks: list[Chunk] = []
    buf_heading, buf = "", ""
    for heading, body in sections:
        if buf and len(buf) + len(body) > max_chars:
            chunks.append(Chunk(doc.id, doc.title, buf_heading, buf))
            buf_heading, buf = "", ""
        if len(body) > max_chars:
            for part in _split_long(body, max_chars):
                chunks.append(Chunk(doc.id, doc.title, heading, part))
            continue
        buf_heading = buf_heading or heading
        buf = f"{buf}\n\n{body}" if buf else body
    if buf:
        chunks.append(Chunk(doc.id, doc.title, buf_heading, buf))
    return chunks or [Chunk(doc.id, doc.title, "", doc.content)]


def _split_long(text: str, max_chars: int) -> list[str]:
    parts, current = [], ""
    for para in re.split(r"\n\s*\n", text):
        if current and len(current) + len(para) > max_chars:
            parts.append(current)
            current = ""
        while len(para) > max_chars:  # a single huge paragraph: hard cut
            parts.append(para[:max_chars])
            para = para[max_chars:]
        current = f"{current}\n\n{para}" if current else para
    if current:
        parts.append(current)
    return parts


def _tokens(text: str) -> list[str]:
    return [t for t in _WORD.findall(text.lower()) if t not in _STOP]


class KnowledgeBase:
    """A searchable set of documents. Build with :meth:`from_documents` or the loaders below."""

    def __init__(self, documents: Sequence[Document], *, embed: EmbedFn | None = None, max_chars: int = 1200):
        if not documents:
            raise ValueError("a knowledge base needs at least one document")
        self.documents = {d.id: d for d in documents}
        self.chunks: list[Chunk] = [c for d in documents for c in chunk_document(d, max_chars)]
        # The title is part of every chunk's indexed text: it names the product or procedure.
        texts = [f"{c.title}\n{c.section}\n{c.text}" for c in self.chunks]
        self._bm25 = bm25s.BM25()
        self._bm25.index([_tokens(t) or ["_"] for t in texts], show_progress=False)
        self._embed = embed
        self._vectors: np.ndarray | None = None
        if embed is not None:
            self._vectors = _normalise(np.asarray(embed(texts), dtype=np.float32))

    @classmethod
    def from_documents(cls, docs: Iterable[dict[str, Any] | Document], **kwargs: Any) -> KnowledgeBase:
        items = [
            d if isinstance(d, Document) else Document(str(d["id"]), d.get("title", ""), d["content"])
            for d in docs
        ]
        return cls(items, **kwargs)

    @classmethod
    def from_markdown(cls, name: str, text: str, **kwargs: Any) -> KnowledgeBase:
        """One document per top-level section of a policy file; ids look like ``policy#cancel-pending-order``."""
        return cls(split_markdown(name, text), **kwargs)

    def _bm25_ranking(self, query: str, depth: int) -> list[tuple[int, float]]:
        tokens = _tokens(query)
        if not tokens:
            return []
        depth = min(depth, len(self.chunks))
        ids, scores = self._bm25.retrieve([tokens], k=depth, show_progress=False, n_threads=1)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if s > 0]

    def _dense_ranking(self, query: str, depth: int) -> list[tuple[int, float]]:
        if self._vectors is None or self._embed is None:
            return []
        q = _normalise(np.asarray(self._embed([query]), dtype=np.float32))[0]
        sims = self._vectors @ q
        order = np.argsort(-sims)[:depth]
        return [(int(i), float(sims[i])) for i in order]

    def search(self, query: str, k: int = 5, *, per_doc: bool = True) -> list[Hit]:
        """The best ``k`` chunks (one per document when ``per_doc``), BM25 and dense fused by rank."""
        depth = max(50, k * 10)
        rankings = [r for r in (self._bm25_ranking(query, depth), self._dense_ranking(query, depth)) if r]
        fused: dict[int, float] = {}
        for ranking in rankings:
            for rank, (idx, _score) in enumerate(ranking):
                # Reciprocal rank fusion: scale-free, so BM25 and cosine scores need no calibration.
                fused[idx] = fused.get(idx, 0.0) + 1.0 / (60 + rank)
        hits: list[Hit] = []
        seen: set[str] = set()
        for idx, score in sorted(fused.items(), key=lambda kv: -kv[1]):
            chunk = self.chunks[idx]
            if per_doc and chunk.doc_id in seen:
                continue
            seen.add(chunk.doc_id)
            hits.append(Hit(chunk.doc_id, chunk.title, chunk.section, chunk.text, round(score, 6)))
            if len(hits) >= k:
                break
        return hits

    def answer(
        self,
        question: str,
        *,
        hub: ChatHub | None = None,
        alias: str | None = None,
        k: int = 3,
        tenant: str | None = None,
    ) -> KnowledgeAnswer:
        """Answer from the retrieved chunks only, citing their document ids.

        With a hub the model writes the answer from numbered sources; without one (or if the
        model cites nothing it was given) the answer is the best-matching sentences, extracted.
        """
        hits = self.search(question, k=k)
        if not hits:
            return KnowledgeAnswer("I could not find this in our documentation.", [], [])
        if hub is not None and alias:
            sources = "\n\n".join(f"[{h.doc_id}] {h.title}\n{h.text[:1500]}" for h in hits)
            request = {
                "messages": [
                    {
                        "role": "system",
                        "content": (
                            "Answer the customer's question using ONLY the sources below. Cite the source id in "
                            "square brackets after each fact, e.g. [doc_id]. If the sources do not answer it, say so."
                            f"\n\nSources:\n{sources}"
                        ),
                    },
                    {"role": "user", "content": question},
                ],
                "max_tokens": 300,
                "temperature": 0,
            }
            response = hub.chat(alias, request, tenant=tenant)
            text = (response["choices"][0]["message"].get("content") or "").strip()
            cited = [h.doc_id for h in hits if f"[{h.doc_id}]" in text]
            if text and cited:
                return KnowledgeAnswer(text, cited, hits)
        return _extractive_answer(question, hits)


def _extractive_answer(question: str, hits: list[Hit], max_sentences: int = 3) -> KnowledgeAnswer:
    q = set(_tokens(question))
    scored: list[tuple[float, int, str, str]] = []
    for rank, hit in enumerate(hits):
        for sentence in re.split(r"(?<=[.!?])\s+|\n+", hit.text):
            sentence = sentence.strip(" -*#\t")
            words = set(_tokens(sentence))
            if len(sentence) < 15 or not words:
                continue
            overlap = len(q & words) / (len(q) or 1)
            # Earlier hits are more relevant; the small rank penalty breaks ties toward them.
            scored.append((overlap - 0.01 * rank, -len(scored), sentence, hit.doc_id))
    scored.sort(reverse=True)
    picked = scored[:max_sentences] or [(0.0, 0, hits[0].text[:300], hits[0].doc_id)]
    citations: list[str] = []
    parts = []
    for _s, _i, sentence, doc_id in picked:
        parts.append(f"{sentence} [{doc_id}]")
        if doc_id not in citations:
            citations.append(doc_id)
    return KnowledgeAnswer(" ".join(parts), citations, hits)


def split_markdown(name: str, text: str) -> list[Document]:
    """Cut a markdown policy at its ``##`` headings into documents ``name#slug``."""
    docs: list[Document] = []
    matches = list(re.finditer(r"^##\s+(.*)$", text, re.M))
    if not matches or matches[0].start() > 0:
        intro = text[: matches[0].start()] if matches else text
        if intro.strip():
            docs.append(Document(f"{name}#overview", f"{name}: overview", intro.strip()))
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        title = m.group(1).strip()
        slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or str(i)
        docs.append(Document(f"{name}#{slug}", title, text[m.start() : end].strip()))
    return docs


def load_documents(folder: str | Path) -> list[Document]:
    """Every ``*.json`` document (``{id, title, content}``) in a folder, sorted by file name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"knowledge folder not found: {folder}")
    docs = []
    for path in sorted(folder.glob("*.json")):
        raw = json.loads(path.read_text(encoding="utf-8"))
        docs.append(Document(str(raw["id"]), raw.get("title", ""), raw.get("content", "")))
    return docs


def retrieval_hit_rate(
    kb: KnowledgeBase, queries: Sequence[tuple[str, Sequence[str]]], k: int = 5
) -> dict[str, Any]:
    """Hit rate and recall of ``kb.search`` for (question, relevant doc ids) pairs.

    ``hit@k``: share of questions with at least one relevant document in the top ``k``;
    ``recall@k``: mean share of a question's relevant documents found in the top ``k``.
    """
    hits = recall = 0.0
    n = 0
    for question, relevant in queries:
        if not relevant:
            continue
        found = {h.doc_id for h in kb.search(question, k=k)}
        rel = set(relevant)
        hits += 1.0 if found & rel else 0.0
        recall += len(found & rel) / len(rel)
        n += 1
    return {"questions": n, "k": k, "hit@k": hits / n if n else 0.0, "recall@k": recall / n if n else 0.0}


def banking_task_queries(tasks_path: str | Path) -> list[tuple[str, list[str]]]:
    """(question, required documents) pairs from τ² banking_knowledge tasks.

    The question is the customer's goal: the instruction paragraphs after the persona line,
    which is what a customer would actually ask about.
    """
    out = []
    for task in json.loads(Path(tasks_path).read_text(encoding="utf-8")):
        instructions = task.get("user_scenario", {}).get("instructions")
        if isinstance(instructions, dict):
            instructions = " ".join(str(v) for v in instructions.values() if v)
        required = task.get("required_documents") or []
        if instructions and required:
            out.append((_customer_goal(str(instructions)), list(required)))
    return out


def _customer_goal(instructions: str) -> str:
    paragraphs = [p.strip() for p in instructions.split("\n\n") if p.strip()]
    # Drop the role-play boilerplate that every task shares; it only adds noise to the query.
    keep = [
        p for p in paragraphs if not p.lower().startswith(("you are currently on the line", "never respond"))
    ]
    return "\n".join(keep)[:2000]


def _normalise(vectors: np.ndarray) -> np.ndarray:
    if vectors.ndim == 1:
        vectors = vectors[None, :]
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)
