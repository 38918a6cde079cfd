"""The tray icon, drawn with Pillow (no image files): a bell-ish disc per state, and the
unread count in a red badge."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

SIZE = 64
COLOURS = {
    "connected": (46, 160, 67),
    "disconnected": (140, 140, 140),
    "unread": (46, 160, 67),
}
BADGE = (220, 30, 30)  # the unread count's disc


def draw(state: str, unread: int, *, connected: bool = True) -> Image.Image:
    """An RGBA image for ``state`` with ``unread`` drawn on it when > 0."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    colour = COLOURS["connected" if connected else "disconnected"]
    d.ellipse((4, 4, SIZE - 4, SIZE - 4), fill=colour)
    # a simple bell: dome, rim and clapper in white
    d.pieslice((18, 14, 46, 44), 180, 360, fill="white")
    d.rectangle((18, 29, 46, 40), fill="white")
    d.rectangle((14, 40, 50, 44), fill="white")
    d.ellipse((28, 45, 36, 52), fill="white")
    if not connected:
        d.line((12, 52, 52, 12), fill=(200, 40, 40), width=6)
    if unread > 0:
        text = str(unread) if unread < 100 else "99+"
        font = ImageFont.load_default(size=26) if _sized_fonts() else ImageFont.load_default()
        d.ellipse((SIZE - 38, 0, SIZE, 34), fill=BADGE)
        box = d.textbbox((0, 0), text, font=font)
        w, h = box[2] - box[0], box[3] - box[1]
        d.text((SIZE - 19 - w / 2 - box[0], 17 - h / 2 - box[1]), text, fill="white", font=font)
    return img


def fit(image: Image.Image, width: int, height: int) -> Image.Image:
    """``image`` (square) scaled to the largest square that fits ``width`` x ``height``,
    centred on a transparent canvas of that size.

    A tray gives an icon the slot it likes, not a square: trayer gives pystray's X11 icon
    24 x (panel height - 2), and stretching the square drawing into it made a 24x46 oval.
    """
    from PIL import Image

    side = max(1, min(width, height))
    canvas = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    scaled = image.convert("RGBA").resize((side, side), Image.Resampling.LANCZOS)
    canvas.paste(scaled, ((width - side) // 2, (height - side) // 2))
    return canvas


def _sized_fonts() -> bool:
    import PIL

    major, minor = (int(x) for x in PIL.__version__.split(".")[:2])
    return (major, minor) >= (10, 1)  # load_default(size=) arrived in Pillow 10.1
