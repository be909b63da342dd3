"""Verify a built plugin library with pyelftools: machine, CUDA device code, exported symbols, NEEDED.

Anything off is a `BuildError` naming the file and what was expected; a report of what was found goes
into the build manifest.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from fbocc.errors import BuildError

MACHINES = {"aarch64": "EM_AARCH64", "x86_64": "EM_X86_64"}
FATBIN_MAGIC = 0xBA55ED50
# Registration entry points TensorRT looks up in a plugin library loaded with --dynamicPlugins /
# IPluginRegistry::loadLibrary: one creator list (IPluginV2 or IPluginV3) plus the logger hook.
CREATOR_SYMBOLS = ("getPluginCreators", "getCreators")
LOGGER_SYMBOL = "setLoggerFinder"


@dataclass
class CudaImage:
    """One entry of a CUDA fatbinary: device code (cubin, "elf") or PTX for an SM version."""

    kind: str
    sm: int


@dataclass
class ElfReport:
    """What a shared library holds; `problems` is empty when it matches the expectation."""

    path: str
    machine: str
    needed: list[str]
    cuda_images: list[CudaImage]
    exported: list[str]
    problems: list[str] = field(default_factory=list)

    @property
    def cubin_archs(self) -> list[str]:
        """SM versions with real device code (not PTX), as strings like "87"."""
        return sorted({str(img.sm) for img in self.cuda_images if img.kind == "elf"})

    @property
    def ptx_archs(self) -> list[str]:
        """SM versions present as PTX only."""
        return sorted({str(img.sm) for img in self.cuda_images if img.kind == "ptx"})

    @property
    def registration_symbols(self) -> list[str]:
        """The TensorRT registration entry points the library exports, in CREATOR_SYMBOLS + LOGGER_SYMBOL order."""
        return [s for s in (*CREATOR_SYMBOLS, LOGGER_SYMBOL) if s in self.exported]


def inspect_library(path: Path) -> ElfReport:
    """Read machine, NEEDED, CUDA fatbin entries and exported dynamic symbols of a shared library."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.dynamic import DynamicSection
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection

    try:
        with path.open("rb") as fh:
            elf = ELFFile(fh)
            machine = str(elf["e_machine"])
            needed: list[str] = []
            exported: list[str] = []
            images: list[CudaImage] = []
            for section in elf.iter_sections():
                if isinstance(section, DynamicSection):
                    needed += [str(tag.needed) for tag in section.iter_tags()  # type: ignore[attr-defined]
                               if tag.entry.d_tag == "DT_NEEDED"]
                elif isinstance(section, SymbolTableSection) and section.name == ".dynsym":
                    for sym in section.iter_symbols():
                        if (sym["st_shndx"] != "SHN_UNDEF" and sym["st_info"]["bind"] in ("STB_GLOBAL", "STB_WEAK")
                                and sym["st_other"]["visibility"] in ("STV_DEFAULT", "STV_PROTECTED")
                                and sym["st_info"]["type"] == "STT_FUNC"):
                            exported.append(sym.name)
                elif section.name == ".nv_fatbin":
                    images += parse_fatbin(section.data())
    except (ELFError, OSError, struct.error) as exc:
        raise BuildError(f"{path} is not a readable ELF shared library: {exc}",
                         fix="check the build output; the file may be truncated") from None
    return ElfReport(path=str(path), machine=machine, needed=needed, cuda_images=images, exported=sorted(exported))


def parse_fatbin(data: bytes) -> list[CudaImage]:
    """Entries of every fatbinary in a `.nv_fatbin` section (one per compiled object, back to back).

    Layout (as written by nvcc's fatbinary): a 16-byte header {u32 magic, u16 version, u16 header size,
    u64 size of the entries}, then entries each starting with {u16 kind (1 PTX, 2 ELF), u16 version,
    u32 entry header size, u64 payload size, ...} with the SM version as u32 at offset 28.
    """
    images: list[CudaImage] = []
    offset = 0
    while offset + 16 <= len(data):
        magic, _version, header_size, fat_size = struct.unpack_from("<IHHQ", data, offset)
        if magic != FATBIN_MAGIC:
            # Fatbinaries are aligned; skip padding between them.
            offset += 8
            continue
        entry = offset + header_size
        end = entry + fat_size
        while entry + 32 <= end:
            kind, _ev, entry_header, payload = struct.unpack_from("<HHIQ", data, entry)
            sm = struct.unpack_from("<I", data, entry + 28)[0]
            if entry_header == 0:
                break
            images.append(CudaImage(kind={1: "ptx", 2: "elf"}.get(kind, f"kind{kind}"), sm=sm))
            entry += entry_header + payload
        offset = max(end, offset + 16)
    return images


def verify_library(path: Path, *, target_arch: str, cuda_archs: list[str], tensorrt: bool) -> ElfReport:
    """Inspect and check against the profile; raise BuildError listing every mismatch."""
    report = inspect_library(path)
    expected_machine = MACHINES.get(target_arch)
    if expected_machine is None:
        raise BuildError(f"unknown target_arch {target_arch!r}", fix=f"use one of {', '.join(MACHINES)}")
    if report.machine != expected_machine:
        report.problems.append(f"ELF machine is {report.machine}, expected {expected_machine} for {target_arch}")
    if not report.cuda_images:
        report.problems.append("no CUDA device code (.nv_fatbin section missing or empty)")
    else:
        missing = [a for a in cuda_archs if a not in report.cubin_archs]
        if missing:
            found = ", ".join(f"sm_{a}" for a in report.cubin_archs) or "none"
            report.problems.append(
                f"no device code for {', '.join('sm_' + a for a in missing)} (cubins found: {found})")
    if tensorrt:
        if not any(s in report.exported for s in CREATOR_SYMBOLS):
            report.problems.append("TensorRT registration symbol not exported: need one of "
                                   + ", ".join(CREATOR_SYMBOLS))
        if LOGGER_SYMBOL not in report.exported:
            report.problems.append(f"TensorRT registration symbol not exported: {LOGGER_SYMBOL}")
    if report.problems:
        raise BuildError(f"{path.name} does not match the build profile: " + "; ".join(report.problems),
                         where=str(path),
                         fix="check the plugin Makefile's flags for this profile (TARGET, CUDA_ARCHS, "
                             "TENSORRT_INCLUDE_DIR) and rebuild with --force")
    return report
