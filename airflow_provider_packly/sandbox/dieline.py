"""Box validation shared by the dieline and quotation endpoints, and the dieline PDF.

Validation follows Packly's documented codes where they exist and fails fast (only the first
error is reported), in the order article, material, width, depth, height:

* ``DLN_1100`` article: documented. The sandbox accepts codes shaped like Packly's examples
  (``s020_v1``): regex ``^[a-z]\\d{3}_v\\d+$``.
* ``DLN_1101`` material: documented. The catalogue is the sandbox's choice, configurable via
  ``SandboxConfig.materials``.
* ``DLN_1102`` width: documented. ``DLN_1103`` depth and ``DLN_1104`` height are not
  documented by Packly; the sandbox's choice, following the documented pattern.
  Dimensions are millimetres: positive, at most two decimals (documented), at most
  2000 mm (not documented by Packly; the sandbox's choice, configurable via
  ``SandboxConfig.max_dimension_mm``).

The PDF is the sandbox's own drawing of a tuck-end box (Packly's real die lines are not
public): a small, valid, one-page PDF 1.4 with a correct cross-reference table, identical
bytes for identical input.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from airflow_provider_packly.sandbox.errors import validation_error

ARTICLE_PATTERN = re.compile(r"^[a-z]\d{3}_v\d+$")
"""Shape of an article code, taken from Packly's examples (``s001_v0``, ``s020_v1``)."""

_DIMENSION_PATTERN = re.compile(r"^\d+(?:\.\d{1,2})?$")

DIMENSION_CODES: dict[str, str] = {"width": "DLN_1102", "depth": "DLN_1103", "height": "DLN_1104"}
"""Error item code per dimension (only ``DLN_1102`` is documented by Packly)."""


@dataclass(frozen=True)
class Box:
    """A validated box: article code, material code and dimensions in millimetres."""

    article: str
    material: str
    width: Decimal
    depth: Decimal
    height: Decimal

    def describe(self) -> str:
        """Return a one-line human description, e.g. ``s020_v1 SBS300 100 x 50 x 30 mm``."""
        return (
            f"article {self.article}, material {self.material}, "
            f"{format_mm(self.width)} x {format_mm(self.depth)} x {format_mm(self.height)} mm"
            " (W x D x H)"
        )


def format_mm(value: Decimal) -> str:
    """Format a dimension without a trailing zero or exponent (``100.50`` -> ``100.5``)."""
    text = format(value.normalize(), "f")
    return text


def validate_box(
    values: Mapping[str, object],
    *,
    materials: Mapping[str, float],
    max_dimension_mm: float,
    path_prefix: str = "",
) -> Box:
    """Validate article, material and dimensions of ``values`` and return a :class:`Box`.

    ``values`` maps parameter names to raw query strings (a non-string, e.g. a nested object
    from bracket notation, is invalid). Raises a ``VALIDATION_ERROR``
    :class:`~airflow_provider_packly.sandbox.errors.EnvelopeError` for the first problem, with
    the error path ``path_prefix + name`` (``items[0].material`` in a quotation).
    """
    article = values.get("article")
    if not isinstance(article, str) or not ARTICLE_PATTERN.match(article):
        raise validation_error(
            "DLN_1100",
            f"{path_prefix}article",
            "article is required and must be a valid article code",
        )
    material = values.get("material")
    if not isinstance(material, str) or material not in materials:
        raise validation_error(
            "DLN_1101",
            f"{path_prefix}material",
            "material is required and must be a valid material code",
        )
    dimensions: dict[str, Decimal] = {}
    for name, code in DIMENSION_CODES.items():
        raw = values.get(name)
        value = Decimal(raw) if isinstance(raw, str) and _DIMENSION_PATTERN.match(raw) else None
        if value is None or value <= 0 or value > Decimal(str(max_dimension_mm)):
            raise validation_error(
                code,
                f"{path_prefix}{name}",
                f"{name} is required and must be a positive number of millimetres with at most"
                f" two decimals, not above {max_dimension_mm:g}",
            )
        dimensions[name] = value
    return Box(article, material, dimensions["width"], dimensions["depth"], dimensions["height"])


# -- PDF -------------------------------------------------------------------------------------------
_PAGE_WIDTH = 842  # A4 landscape, points
_PAGE_HEIGHT = 595
_GLUE_FLAP_MM = Decimal(15)
_TUCK_MM = Decimal(15)


def _pdf_string(text: str) -> str:
    """Escape ``text`` for a PDF literal string (latin-1 subset only)."""
    safe = text.encode("latin-1", "replace").decode("latin-1")
    return "(" + safe.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ")"


def _num(value: float) -> str:
    """Format a coordinate with two decimals (deterministic, no exponent)."""
    return f"{value:.2f}"


def _content_stream(box: Box) -> bytes:
    """Draw the flat tuck-end blank of ``box`` scaled to the page, plus a caption."""
    w, d, h = float(box.width), float(box.depth), float(box.height)
    glue, tuck = float(_GLUE_FLAP_MM), float(_TUCK_MM)
    total_w = glue + 2 * w + 2 * d
    total_h = h + 2 * (d + tuck)
    left, bottom, right, top = 36.0, 100.0, _PAGE_WIDTH - 36.0, _PAGE_HEIGHT - 36.0
    scale = min((right - left) / total_w, (top - bottom) / total_h)
    origin_x = left + ((right - left) - total_w * scale) / 2
    origin_y = bottom + ((top - bottom) - total_h * scale) / 2

    rects: list[tuple[str, float, float, float, float]] = []  # label, x, y, width, height (mm)
    body_y = d + tuck
    x = 0.0
    for label, panel_w in (("glue", glue), ("D", d), ("W", w), ("D", d), ("W", w)):
        rects.append((label, x, body_y, panel_w, h))
        x += panel_w
    lid_x = glue + d  # tuck lid above the first W panel, bottom lid below the second
    rects.append(("lid", lid_x, body_y + h, w, d))
    rects.append(("tuck", lid_x, body_y + h + d, w, tuck))
    bottom_x = glue + 2 * d + w
    rects.append(("lid", bottom_x, tuck, w, d))
    rects.append(("tuck", bottom_x, 0.0, w, tuck))
    for dust_x in (glue, glue + d + w):  # dust flaps over and under both D panels
        rects.append(("dust", dust_x, body_y + h, d, d / 2))
        rects.append(("dust", dust_x, body_y - d / 2, d, d / 2))

    def px(mm: float) -> str:
        return _num(origin_x + mm * scale)

    def py(mm: float) -> str:
        return _num(origin_y + mm * scale)

    ops: list[str] = ["% cut lines (solid black)", "q", "0.75 w", "0 0 0 RG"]
    for _, rx, ry, rw, rh in rects:
        ops.append(f"{px(rx)} {py(ry)} {_num(rw * scale)} {_num(rh * scale)} re S")
    ops.append("Q")

    # Crease (fold) lines, dashed red: between body panels, and where flaps meet the body.
    creases: list[tuple[float, float, float, float]] = []
    x = glue
    for panel_w in (d, w, d, w):
        creases.append((x, body_y, x, body_y + h))
        x += panel_w
    creases.append((glue, body_y + h, total_w, body_y + h))
    creases.append((glue, body_y, total_w, body_y))
    creases.append((lid_x, body_y + h + d, lid_x + w, body_y + h + d))
    creases.append((bottom_x, tuck, bottom_x + w, tuck))
    ops += ["% crease lines (dashed red)", "q", "0.5 w", "1 0 0 RG", "[4 2] 0 d"]
    ops += [f"{px(x1)} {py(y1)} m {px(x2)} {py(y2)} l S" for x1, y1, x2, y2 in creases]
    ops.append("Q")

    # A millimetre ruler under the blank, with at most about 40 ticks.
    tick = next(step for step in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000) if total_w / step <= 40)
    ruler_y = origin_y - 14
    ops += ["% ruler (mm)", "q", "0.3 w", "0.3 0.3 0.3 RG"]
    ops.append(f"{px(0)} {_num(ruler_y)} m {px(total_w)} {_num(ruler_y)} l S")
    for index in range(int(total_w // tick) + 1):
        length = 6 if index % 5 == 0 else 3
        ops.append(f"{px(index * tick)} {_num(ruler_y)} m {px(index * tick)} {_num(ruler_y - length)} l S")
    ops.append("Q")
    for index in range(0, int(total_w // tick) + 1, 5):
        ops.append(f"BT /F1 6 Tf {_num(float(px(index * tick)) - 3)} {_num(ruler_y - 13)} Td ({index * tick}) Tj ET")
    for label, rx, ry, rw, rh in rects:
        if label in ("W", "D"):
            value = format_mm(box.width if label == "W" else box.depth)
            ops.append(
                f"BT /F1 7 Tf {_num(origin_x + (rx + rw / 2) * scale - 12)} "
                f"{_num(origin_y + (ry + rh / 2) * scale)} Td "
                f"{_pdf_string(f'{label} {value} mm')} Tj ET"
            )
    ops.append(f"BT /F1 11 Tf 36 50 Td {_pdf_string('Packly sandbox dieline: ' + box.describe())} Tj ET")
    ops.append(
        "BT /F1 8 Tf 36 34 Td "
        + _pdf_string(
            "Generated by the airflow-provider-packly sandbox server; not a Packly die line, not for production."
        )
        + " Tj ET"
    )
    return ("\n".join(ops) + "\n").encode("latin-1")


def pdf_padding(size: int) -> bytes:
    """Return exactly ``size`` bytes of PDF comment lines (``%...\\n``), or nothing.

    Comments are legal wherever whitespace is, so the padded file stays a valid PDF.
    """
    if size <= 0:
        return b""
    line = b"%" + b"sandbox-padding-" * 4 + b"." * 14 + b"\n"  # 80 bytes
    full, rest = divmod(size, len(line))
    tail = b"\n" if rest == 1 else (b"%" + b"." * (rest - 2) + b"\n" if rest else b"")
    return line * full + tail


def dieline_pdf(box: Box, padding_bytes: int = 0) -> bytes:
    """Return a one-page PDF drawing the die line of ``box``.

    Deterministic: no dates or random ids. ``padding_bytes`` bytes of comment lines are
    placed between the last object and the cross-reference table (so object offsets do not
    move and ``startxref`` still points at ``xref``), to produce large files for streaming
    tests.
    """
    content = _content_stream(box)
    objects: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {_PAGE_WIDTH} {_PAGE_HEIGHT}]"
            " /Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>"
        ).encode("ascii"),
        b"<< /Length " + str(len(content)).encode("ascii") + b" >>\nstream\n" + content + b"endstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Producer (airflow-provider-packly sandbox) /Title "
        + _pdf_string(f"Dieline {box.article} {box.material}").encode("latin-1")
        + b" >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets: list[int] = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode("ascii") + body + b"\nendobj\n"
    out += pdf_padding(padding_bytes)
    xref_offset = len(out)
    out += f"xref\n0 {len(objects) + 1}\n".encode("ascii")
    out += b"0000000000 65535 f \n"
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode("ascii")
    out += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R /Info 6 0 R >>\nstartxref\n{xref_offset}\n%%EOF\n"
    ).encode("ascii")
    return bytes(out)
