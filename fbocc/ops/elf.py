"""What a built plugin library is: host architecture, the GPU architectures of its embedded cubins, its
dynamic dependencies and exported plugin entry points. Reads the ELF with pyelftools (no CUDA tools needed).
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from pathlib import Path

from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile

_FATBIN_MAGIC = 0xBA55ED50
_FATBIN_KIND_CUBIN = 2
PLUGIN_ENTRY_POINTS = ("getPluginCreators", "getCreators", "setLoggerFinder")


@dataclass(frozen=True)
class LibraryInfo:
    """The facts about a shared library that decide whether a target can load it."""

    path: Path
    machine: str  # pyelftools' e_machine name: "EM_AARCH64", "EM_X86_64"
    sm_archs: tuple[int, ...]  # SM versions with machine code (cubins), e.g. (87,)
    needed: tuple[str, ...]  # DT_NEEDED entries, e.g. ("libcudart.so.13", ...)
    exported: tuple[str, ...]  # plugin entry points among the dynamic symbols


def _cubin_archs(fatbin: bytes) -> list[int]:
    archs: list[int] = []
    offset = 0
    while offset + 16 <= len(fatbin):
        magic, _version, header_size, body_size = struct.unpack_from("<IHHQ", fatbin, offset)
        if magic != _FATBIN_MAGIC:
            break
        entry, end = offset + header_size, offset + header_size + body_size
        while entry + 32 <= end:
            kind, _, entry_header, payload = struct.unpack_from("<HHIQ", fatbin, entry)
            arch = struct.unpack_from("<I", fatbin, entry + 28)[0]
            if kind == _FATBIN_KIND_CUBIN:
                archs.append(arch)
                blob = fatbin[entry + entry_header: entry + entry_header + 64]
                if blob[:4] == b"\x7fELF":  # uncompressed cubin: confirm it is CUDA code for that SM
                    cubin = ELFFile(io.BytesIO(fatbin[entry + entry_header: entry + entry_header + payload]))
                    if cubin["e_machine"] != "EM_CUDA":
                        archs.pop()
            entry += entry_header + payload
        offset = end
    return archs


def inspect_library(path: Path) -> LibraryInfo:
    """Read `path` (a shared library); raises ValueError when it is not an ELF file."""
    with path.open("rb") as f:
        try:
            elf = ELFFile(f)
        except Exception as exc:  # pyelftools raises its own ELFError subclasses and struct errors
            raise ValueError(f"{path} is not an ELF shared library: {exc}") from exc
        section = elf.get_section_by_name(".nv_fatbin")
        archs = sorted(set(_cubin_archs(section.data()))) if section is not None else []
        needed: list[str] = []
        exported: list[str] = []
        for sec in elf.iter_sections():
            if isinstance(sec, DynamicSection):
                needed += [t.needed for t in sec.iter_tags() if t.entry.d_tag == "DT_NEEDED"]  # type: ignore[attr-defined]
        dynsym = elf.get_section_by_name(".dynsym")
        if dynsym is not None:
            for sym in dynsym.iter_symbols():  # type: ignore[attr-defined]
                if sym.name in PLUGIN_ENTRY_POINTS and sym["st_shndx"] != "SHN_UNDEF":
                    exported.append(sym.name)
        return LibraryInfo(path, elf["e_machine"], tuple(archs), tuple(needed), tuple(sorted(exported)))
