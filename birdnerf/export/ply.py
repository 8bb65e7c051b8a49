"""Binary PLY files assembled from parts written block by block.

Each block appends its vertices (and faces, with indices local to the block) to part files in a
private folder; :meth:`PlyParts.assemble` then streams them into one little-endian binary PLY,
shifting each block's face indices by the vertices written before it. Only one block's records
are ever in memory, and the final file appears under its name only when complete.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from birdnerf import atomic

VERTEX = np.dtype(
    [
        ("x", "<f8"),
        ("y", "<f8"),
        ("z", "<f8"),
        ("nx", "<f4"),
        ("ny", "<f4"),
        ("nz", "<f4"),
        ("red", "u1"),
        ("green", "u1"),
        ("blue", "u1"),
    ]
)
"""A vertex: position in double precision (georeferenced coordinates keep their millimetres),
unit normal, 8-bit colour."""
FACE = np.dtype([("count", "u1"), ("vertex_indices", "<i4", (3,))])
_PLY_TYPES = {"<f8": "double", "<f4": "float", "|u1": "uchar", "<i4": "int"}


def vertex_records(xyz: np.ndarray, normals: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """(N,) :data:`VERTEX` records of (N, 3) positions, (N, 3) normals and (N, 3) uint8 colours."""
    out = np.empty(len(xyz), dtype=VERTEX)
    for k, axis in enumerate("xyz"):
        out[axis] = xyz[:, k]
        out[f"n{axis}"] = normals[:, k]
    for k, channel in enumerate(("red", "green", "blue")):
        out[channel] = rgb[:, k]
    return out


def header(n_vertices: int, n_faces: int, comments: list[str]) -> bytes:
    lines = ["ply", "format binary_little_endian 1.0"]
    lines += [f"comment {c}" for c in comments]
    lines.append(f"element vertex {n_vertices}")
    lines += [f"property {_PLY_TYPES[VERTEX[name].str]} {name}" for name in VERTEX.names]
    if n_faces:
        lines += [f"element face {n_faces}", "property list uchar int vertex_indices"]
    lines.append("end_header")
    return ("\n".join(lines) + "\n").encode("ascii")


class PlyParts:
    """Vertex and face records of one PLY, appended block by block to files in ``folder``."""

    def __init__(self, folder: Path, name: str):
        self.vertices_path = folder / f"{name}.vertices"
        self.faces_path = folder / f"{name}.faces"
        self.vertex_counts: list[int] = []
        self.face_counts: list[int] = []

    @property
    def n_vertices(self) -> int:
        return sum(self.vertex_counts)

    @property
    def n_faces(self) -> int:
        return sum(self.face_counts)

    def append(self, vertices: np.ndarray, faces: np.ndarray | None = None) -> None:
        """Add one block's (N,) :data:`VERTEX` records and (M, 3) triangles indexing them (0..N-1)."""
        with open(self.vertices_path, "ab") as f:
            vertices.astype(VERTEX, copy=False).tofile(f)
        self.vertex_counts.append(len(vertices))
        faces = np.zeros((0, 3), np.int32) if faces is None else np.asarray(faces, np.int32)
        with open(self.faces_path, "ab") as f:
            faces.astype("<i4").tofile(f)
        self.face_counts.append(len(faces))

    def assemble(self, out: Path, comments: list[str]) -> Path:
        """Write the PLY (atomically): the header, every vertex, then every face, shifted."""
        with atomic.atomic_path(out) as tmp, open(tmp, "wb") as f:
            f.write(header(self.n_vertices, self.n_faces, comments))
            if self.n_vertices:
                with open(self.vertices_path, "rb") as src:
                    shutil.copyfileobj(src, f, 1 << 22)
            if self.n_faces:
                offset = 0
                with open(self.faces_path, "rb") as src:
                    for n_v, n_f in zip(self.vertex_counts, self.face_counts, strict=True):
                        local = np.fromfile(src, dtype="<i4", count=3 * n_f).reshape(-1, 3)
                        records = np.empty(n_f, dtype=FACE)
                        records["count"] = 3
                        records["vertex_indices"] = local + offset
                        records.tofile(f)
                        offset += n_v
        return out
