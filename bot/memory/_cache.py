"""Conversations' vectors held as matrices and searched with numpy, for databases that cannot
search them (SQLite, PostgreSQL without pgvector): the most recently used conversations are
kept, within a budget of bytes."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


class _Matrix:
    """One conversation's vectors, a row per turn, with room to grow at the end."""

    def __init__(self, dimensions: int, rows: Sequence[tuple[int, bytes]]) -> None:
        import numpy as np

        self.count = 0
        self.ids: npt.NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self.vectors: npt.NDArray[np.float32] = np.zeros((0, dimensions), dtype=np.float32)
        # The newest turn read from the database (not those this process added): what other
        # processes stored after it is read at the next search.
        self.newest = 0
        self.extend(rows, read=True)

    @property
    def nbytes(self) -> int:
        return int(self.ids.nbytes + self.vectors.nbytes)

    def extend(self, rows: Sequence[tuple[int, bytes]], *, read: bool) -> None:
        """Add rows (`read`: from the database, rather than made by this process)."""
        import numpy as np

        if not rows:
            return
        if read:
            self.newest = max(self.newest, max(row[0] for row in rows))
        self.remove([row[0] for row in rows])  # a turn embedded again (its text replaced)
        needed = self.count + len(rows)
        joined = b"".join([row[1] for row in rows])
        if self.count == 0:  # read at once: the bytes are the matrix (growing copies it)
            self.ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
            self.vectors = np.frombuffer(joined, dtype="<f4").reshape(len(rows), -1)
            self.count = needed
            return
        if needed > len(self.ids):  # doubled, so that appending a few rows costs little
            capacity = max(needed, 2 * len(self.ids))
            ids = np.zeros(capacity, dtype=np.int64)
            vectors = np.zeros((capacity, self.vectors.shape[1]), dtype=np.float32)
            ids[: self.count] = self.ids[: self.count]
            vectors[: self.count] = self.vectors[: self.count]
            self.ids, self.vectors = ids, vectors
        new = slice(self.count, needed)
        self.ids[new] = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        self.vectors[new] = np.frombuffer(joined, dtype="<f4").reshape(len(rows), -1)
        self.count = needed

    def remove(self, turn_ids: Sequence[int]) -> None:
        import numpy as np

        if self.count == 0 or not turn_ids:
            return
        kept = ~np.isin(self.ids[: self.count], turn_ids)
        if kept.all():
            return
        count = int(kept.sum())
        # Copies: the matrix read at once is the database's bytes, not writable.
        self.ids = self.ids[: self.count][kept]
        self.vectors = self.vectors[: self.count][kept]
        self.count = count

    def nearest(self, query: bytes, *, before: int | None, limit: int) -> list[tuple[int, float]]:
        import numpy as np

        if self.count == 0:
            return []
        similarity = self.vectors[: self.count] @ np.frombuffer(query, dtype="<f4")
        if before is not None:
            similarity[self.ids[: self.count] >= before] = -np.inf
        k = min(limit, self.count)
        best = np.argpartition(-similarity, k - 1)[:k]
        best = best[np.argsort(-similarity[best])]
        return [(int(self.ids[i]), float(similarity[i])) for i in best if similarity[i] > -np.inf]


class VectorCache:
    def __init__(self, dimensions: int, max_bytes: int) -> None:
        self._dimensions = dimensions
        self._max_bytes = max_bytes
        self._matrices: OrderedDict[int, _Matrix] = OrderedDict()
        self._bytes = 0

    def get(self, conversation_id: int) -> _Matrix | None:
        matrix = self._matrices.get(conversation_id)
        if matrix is not None:
            self._matrices.move_to_end(conversation_id)
        return matrix

    def put(self, conversation_id: int, rows: Sequence[tuple[int, bytes]]) -> _Matrix:
        self.drop(conversation_id)
        matrix = _Matrix(self._dimensions, rows)
        self._matrices[conversation_id] = matrix
        self._bytes += matrix.nbytes
        self._keep_within_budget()
        return matrix

    def extend(
        self, conversation_id: int, rows: Sequence[tuple[int, bytes]], *, read: bool = False
    ) -> None:
        """New vectors of a conversation, if it is held (`read`: from the database)."""
        matrix = self._matrices.get(conversation_id)
        if matrix is None:
            return
        self._bytes -= matrix.nbytes
        matrix.extend(rows, read=read)
        self._bytes += matrix.nbytes
        self._keep_within_budget()

    def remove(self, conversation_id: int, turn_ids: Sequence[int]) -> None:
        """Turns' vectors gone from the database, if the conversation is held."""
        matrix = self._matrices.get(conversation_id)
        if matrix is None:
            return
        self._bytes -= matrix.nbytes
        matrix.remove(turn_ids)
        self._bytes += matrix.nbytes

    def drop(self, conversation_id: int) -> None:
        matrix = self._matrices.pop(conversation_id, None)
        if matrix is not None:
            self._bytes -= matrix.nbytes

    def _keep_within_budget(self) -> None:
        # The newest stays even alone over budget: it is being searched.
        while self._bytes > self._max_bytes and len(self._matrices) > 1:
            _, oldest = self._matrices.popitem(last=False)
            self._bytes -= oldest.nbytes
