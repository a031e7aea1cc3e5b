"""The trace panel: what a KSamplerTrace node recorded, step by step (docs/how-stable-diffusion-works.md).

A step scrubber shows that step's tiles (the noisy latent x_t, the model's guess of the clean image
x̂₀, its guess of the noise ε̂, and the update the sampler applied); the schedule plot draws σ per
step on a log scale for every schedule (the run's bold, the others faint) with the step marked; the
heatmap shows where a prompt token steered the picture, for the step or summed over the decided steps (σ ≤ 1), over
the image or as a colour map, and hovering it ranks the tokens at that pixel.

The panel reads only the node's `ui` dict ("trace": [VIEW], see the KSamplerTrace node) and the
files it names (PNG tiles, an .npz of attention maps); it imports nothing from `nodes`. numpy is
imported when a trace is shown (not at start-up).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFontMetricsF, QImage, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import (
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QSizePolicy,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from . import theme
from .trace_data import (
    format_ranking,
    heat_colours,
    load_attention,
    plain_word,
    rank_tokens,
    token_shares,
    trace_token_index,
)

if TYPE_CHECKING:
    import numpy as np

ROWS = ("x_t", "denoised", "eps", "update")
ROW_LABELS = {"x_t": "x_t (noisy latent)", "denoised": "x̂₀ (denoised)", "eps": "ε̂ (guided noise)",
              "update": "applied update"}
# the run's schedule is drawn in the accent blue, the others faint in these (the step marker is yellow)
SCHEDULE_COLOURS = ("#b07fe0", "#6bbf6b", "#e5534b", "#4fd1c5", "#e08a4f", "#c9c9c9", "#d6a0c8", "#9fb7d6")



def _qimage(rgb: np.ndarray) -> QImage:
    import numpy as np

    rgb = np.ascontiguousarray(rgb)
    h, w = rgb.shape[:2]
    fmt = QImage.Format_RGBA8888 if rgb.shape[2] == 4 else QImage.Format_RGB888
    return QImage(rgb.data, w, h, rgb.shape[2] * w, fmt).copy()


# -- widgets ----------------------------------------------------------------------------------------
class Tile(QWidget):
    """One picture with its caption (a row of the trace at the selected step)."""

    def __init__(self, caption: str, side: int = 128, parent=None):
        super().__init__(parent)
        self.side = side
        self.image = QImage()
        self.caption = caption
        self.setFixedSize(side, side + 20)

    def set_image(self, path: str | None) -> None:
        self.image = QImage(path) if path else QImage()
        self.setToolTip(path or "")
        self.update()

    def paintEvent(self, _event):  # noqa: N802 - Qt API
        p = QPainter(self)
        p.setRenderHint(QPainter.SmoothPixmapTransform)
        frame = QRectF(0, 0, self.side, self.side)
        p.fillRect(frame, QColor(theme.FIELD))
        if not self.image.isNull():
            p.drawImage(frame, self.image)
        else:
            p.setPen(QColor(theme.TEXT_DIM))
            p.drawText(frame, Qt.AlignCenter, "—")
        p.setPen(QColor(theme.FIELD_BORDER))
        p.drawRect(frame.adjusted(0, 0, -1, -1))
        p.setPen(QColor(theme.TEXT_DIM))
        p.setFont(theme.node_font(8.5))
        p.drawText(QRectF(0, self.side + 2, self.side, 18), Qt.AlignHCenter | Qt.AlignVCenter, self.caption)
        p.end()


class SchedulePlot(QWidget):
    """σ per step on a log scale: every schedule faint, the run's bold, the selected step marked."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.schedules: dict[str, list[float]] = {}
        self.active = ""
        self.step = 0
        self.setMinimumSize(260, 200)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)

    def set_schedules(self, schedules: dict[str, list[float]], active: str) -> None:
        self.schedules = {k: [float(s) for s in v] for k, v in schedules.items() if v}
        self.active = active
        self.update()

    def set_step(self, step: int) -> None:
        self.step = step
        self.update()

    def _range(self) -> tuple[float, float]:
        positive = [s for v in self.schedules.values() for s in v if s > 0]
        if not positive:
            return -2.0, 1.0
        lo, hi = math.log10(min(positive)), math.log10(max(positive))
        return math.floor(lo), max(math.ceil(hi), math.floor(lo) + 1)

    def point(self, plot: QRectF, index: int, count: int, sigma: float, lo: float, hi: float) -> QPointF:
        """Where step `index` of `count` noise levels sits (σ = 0 sits on the bottom edge)."""
        x = plot.left() + plot.width() * index / max(1, count - 1)
        level = math.log10(sigma) if sigma > 0 else lo
        y = plot.bottom() - plot.height() * (max(lo, level) - lo) / (hi - lo)
        return QPointF(x, y)

    def paintEvent(self, _event):  # noqa: N802 - Qt API
        p = QPainter(self)
        p.setRenderHint(QPainter.Antialiasing)
        p.fillRect(self.rect(), QColor(theme.FIELD))
        small = theme.node_font(8)
        p.setFont(small)
        plot = QRectF(46, 26, self.width() - 60, self.height() - 58)
        lo, hi = self._range()
        # 1. decades as grid lines, labelled on the σ axis
        for d in range(int(lo), int(hi) + 1):
            y = plot.bottom() - plot.height() * (d - lo) / (hi - lo)
            p.setPen(QPen(QColor(theme.GRID_MAJOR), 1))
            p.drawLine(QPointF(plot.left(), y), QPointF(plot.right(), y))
            p.setPen(QColor(theme.TEXT_DIM))
            label = f"{10.0 ** d:g}"
            p.drawText(QRectF(0, y - 8, plot.left() - 6, 16), Qt.AlignRight | Qt.AlignVCenter, label)
        p.setPen(QColor(theme.TEXT_DIM))
        p.drawText(QRectF(plot.left(), 4, plot.width(), 18), Qt.AlignLeft | Qt.AlignVCenter,
                   "noise level σ per step (log scale)")
        p.drawText(QRectF(plot.left(), plot.bottom() + 4, plot.width(), 16), Qt.AlignLeft, "step 1")
        run = self.schedules.get(self.active) or []
        if run:  # the run's schedule: steps + 1 levels, the last where the last step ends
            p.drawText(QRectF(plot.left(), plot.bottom() + 4, plot.width(), 16), Qt.AlignRight,
                       f"end of step {len(run) - 1} (σ = {run[-1]:.3g})")
        # 2. the curves: the others faint, then the run's schedule bold on top
        names = sorted(self.schedules, key=lambda n: n == self.active)
        others = sorted(n for n in self.schedules if n != self.active)
        colours = {n: QColor(SCHEDULE_COLOURS[i % len(SCHEDULE_COLOURS)]) for i, n in enumerate(others)}
        colours[self.active] = QColor(theme.ACCENT)
        for name in names:
            sigmas = self.schedules[name]
            active = name == self.active
            colour = QColor(colours[name])
            colour.setAlpha(255 if active else 110)
            path = QPainterPath()
            for i, s in enumerate(sigmas):
                pt = self.point(plot, i, len(sigmas), s, lo, hi)
                path.moveTo(pt) if i == 0 else path.lineTo(pt)
            p.setPen(QPen(colour, 2.6 if active else 1.2))
            p.setBrush(Qt.NoBrush)
            p.drawPath(path)
            if active:
                p.setBrush(colour)
                p.setPen(Qt.NoPen)
                for i, s in enumerate(sigmas):
                    p.drawEllipse(self.point(plot, i, len(sigmas), s, lo, hi), 2.2, 2.2)
        # 3. the selected step: from σ_from to σ_to on the run's schedule
        sigmas = self.schedules.get(self.active, [])
        if 0 <= self.step < len(sigmas) - 1:
            a = self.point(plot, self.step, len(sigmas), sigmas[self.step], lo, hi)
            b = self.point(plot, self.step + 1, len(sigmas), sigmas[self.step + 1], lo, hi)
            p.setPen(QPen(QColor(theme.SELECTED), 1, Qt.DashLine))
            p.drawLine(QPointF(a.x(), plot.top()), QPointF(a.x(), plot.bottom()))
            p.setPen(QPen(QColor(theme.SELECTED), 3.2))
            p.drawLine(a, b)
            p.setBrush(QColor(theme.SELECTED))
            p.setPen(Qt.NoPen)
            p.drawEllipse(a, 5, 5)
            p.setPen(QColor(theme.SELECTED))
            p.setFont(theme.node_font(8.5, bold=True))
            text = f"step {self.step + 1}: σ {sigmas[self.step]:.3g} → {sigmas[self.step + 1]:.3g}"
            p.drawText(QRectF(plot.left(), 4, plot.width(), 18), Qt.AlignRight | Qt.AlignVCenter, text)
        # 4. the legend, top right (the curves fall from top left to bottom right): the run's in bold
        y = plot.top() + 4
        text_w = max((QFontMetricsF(theme.node_font(8, bold=True)).horizontalAdvance(n) for n in self.schedules),
                     default=0) + 4
        left = plot.right() - text_w - 26
        if self.schedules:
            p.setPen(Qt.NoPen)
            p.setBrush(QColor(29, 32, 36, 225))
            p.drawRoundedRect(QRectF(left - 6, y - 3, text_w + 34, 16 * len(self.schedules) + 6), 4, 4)
        for name in sorted(self.schedules):
            colour = QColor(colours[name])
            colour.setAlpha(255 if name == self.active else 170)
            p.setPen(QPen(colour, 2.6 if name == self.active else 1.2))
            p.drawLine(QPointF(left, y + 8), QPointF(left + 16, y + 8))
            p.setFont(theme.node_font(8, bold=name == self.active))
            p.setPen(QColor(theme.TEXT) if name == self.active else QColor(theme.TEXT_DIM))
            p.drawText(QRectF(left + 20, y, text_w + 4, 16), Qt.AlignLeft | Qt.AlignVCenter, name)
            y += 16
        p.end()


class HeatmapView(QWidget):
    """A token's map over the image (or alone as a colour map); hovering says where it is."""

    hovered = Signal(int, int)  # y, x in the map's pixels
    left = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.base = QImage()
        self.heat = QImage()
        self.overlay = True
        self.map_size = (0, 0)  # H, W
        self.hover: tuple[int, int] | None = None
        self.setMouseTracking(True)
        self.setMinimumSize(180, 180)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)

    def set_content(self, base: QImage, values: np.ndarray | None, overlay: bool) -> None:
        """`values` [H, W] in 0..1 (None: the image alone)."""
        import numpy as np

        self.base, self.overlay = base, overlay
        if values is None:
            self.heat, self.map_size = QImage(), (0, 0)
        else:
            rgb = heat_colours(values)
            alpha = (np.clip(values, 0, 1) ** 0.8 * 215).astype(np.uint8) if overlay else np.full(values.shape, 255, np.uint8)
            self.heat = _qimage(np.dstack([rgb, alpha]))
            self.map_size = values.shape
        self.update()

    def image_rect(self) -> QRectF:
        side = min(self.width(), self.height()) - 4
        return QRectF((self.width() - side) / 2, (self.height() - side) / 2, side, side)

    def map_pixel(self, pos: QPointF) -> tuple[int, int] | None:
        """The map pixel (y, x) under a widget position, or None outside the image."""
        h, w = self.map_size
        r = self.image_rect()
        if not h or not r.contains(pos):
            return None
        x = int((pos.x() - r.left()) / r.width() * w)
        y = int((pos.y() - r.top()) / r.height() * h)
        return min(h - 1, max(0, y)), min(w - 1, max(0, x))

    def widget_pos(self, y: int, x: int) -> QPointF:
        """The centre of map pixel (y, x) in widget coordinates."""
        h, w = self.map_size
        r = self.image_rect()
        return QPointF(r.left() + (x + 0.5) * r.width() / w, r.top() + (y + 0.5) * r.height() / h)

    def mouseMoveEvent(self, event):  # noqa: N802 - Qt API
        pixel = self.map_pixel(event.position())
        if pixel != self.hover:
            self.hover = pixel
            self.update()
            if pixel is None:
                self.left.emit()
            else:
                self.hovered.emit(*pixel)

    def leaveEvent(self, _event):  # noqa: N802 - Qt API
        self.hover = None
        self.update()
        self.left.emit()

    def paintEvent(self, _event):  # noqa: N802 - Qt API
        p = QPainter(self)
        p.setRenderHint(QPainter.SmoothPixmapTransform)
        r = self.image_rect()
        p.fillRect(r, QColor(theme.FIELD))
        if self.overlay and not self.base.isNull():
            p.drawImage(r, self.base)
        if not self.heat.isNull():
            p.drawImage(r, self.heat)
        if self.hover is not None and self.map_size[0]:
            c = self.widget_pos(*self.hover)
            p.setRenderHint(QPainter.Antialiasing)
            p.setPen(QPen(QColor(0, 0, 0, 160), 3))
            p.drawEllipse(c, 6, 6)
            p.setPen(QPen(QColor("#ffffff"), 1.5))
            p.drawEllipse(c, 6, 6)
        p.setPen(QColor(theme.FIELD_BORDER))
        p.setBrush(Qt.NoBrush)
        p.drawRect(r.adjusted(0, 0, -1, -1))
        p.end()


class TracePanel(QWidget):
    """The dock's contents: the traces of this session's KSamplerTrace runs, one shown at a time."""

    trace_shown = Signal(str)  # node id

    def __init__(self, parent=None):
        super().__init__(parent)
        self.traces: dict[str, dict] = {}  # node id → its latest VIEW
        self.node_id: str | None = None
        self.view: dict | None = None
        self.maps: np.ndarray | None = None
        self.total: np.ndarray | None = None
        self.token: int | None = None
        self.ranking: list[tuple[str, float]] = []
        self._build()
        self._show_empty()

    # -- construction -------------------------------------------------------------------------------
    def _build(self) -> None:
        outer = QVBoxLayout(self)
        outer.setContentsMargins(8, 6, 8, 6)
        outer.setSpacing(6)
        top = QHBoxLayout()
        top.setSpacing(14)
        self.title = QLabel()
        self.title.setFont(theme.node_font(10, bold=True))
        top.addWidget(self.title)
        # the scrubber: one position per sampler step
        self.slider = QSlider(Qt.Horizontal)
        self.slider.setToolTip("Scrub through the sampler's steps (arrow keys step one at a time)")
        self.slider.setTickPosition(QSlider.TicksBelow)
        self.slider.setPageStep(1)
        self.slider.valueChanged.connect(self.set_step)
        self.step_label = QLabel()
        self.step_label.setMinimumWidth(250)
        self.step_label.setFont(theme.node_font(10, bold=True))
        self.step_label.setStyleSheet(f"color: {theme.SELECTED};")
        top.addWidget(self.slider, 1)
        top.addWidget(self.step_label)
        outer.addLayout(top)
        row = QHBoxLayout()
        row.setSpacing(14)
        outer.addLayout(row, 1)

        # the selected step's tiles
        left = QVBoxLayout()
        grid = QGridLayout()
        grid.setSpacing(8)
        self.tiles = {name: Tile(ROW_LABELS[name]) for name in ROWS}
        for i, name in enumerate(ROWS):
            grid.addWidget(self.tiles[name], i // 2, i % 2)
        left.addLayout(grid)
        left.addStretch(1)
        row.addLayout(left)

        self.plot = SchedulePlot()
        row.addWidget(self.plot, 3)

        # tokens: which one, per step or summed, over the image or as a colour map
        right = QVBoxLayout()
        controls = QHBoxLayout()
        self.scope = QComboBox()
        self.scope.addItems(["this step", "summed (σ ≤ 1)"])
        self.scope.setToolTip("The token's map at the selected step, or summed over the steps from σ ≤ 1 on, once the picture is decided")
        self.style_box = QComboBox()
        self.style_box.addItems(["over the image", "colour map"])
        self.style_box.setToolTip("Draw the map over the denoised image, or on its own")
        for box in (self.scope, self.style_box):
            box.currentIndexChanged.connect(lambda _i: self._show_heat())
            controls.addWidget(box)
        right.addLayout(controls)
        maps = QHBoxLayout()
        self.token_list = QListWidget()
        self.token_list.setFixedWidth(120)
        self.token_list.setToolTip("The prompt's tokens: pick one to see where it steered the picture")
        self.token_list.currentRowChanged.connect(self._token_row)
        maps.addWidget(self.token_list)
        self.heatmap = HeatmapView()
        self.heatmap.hovered.connect(self.hover_at)
        self.heatmap.left.connect(self._hover_left)
        maps.addWidget(self.heatmap, 1)
        right.addLayout(maps, 1)
        self.rank_label = QLabel()
        self.rank_label.setWordWrap(True)
        self.rank_label.setMinimumHeight(34)
        self.rank_label.setStyleSheet(f"color: {theme.TEXT_DIM};")
        right.addWidget(self.rank_label)
        row.addLayout(right, 3)

    # -- traces ---------------------------------------------------------------------------------------
    def add_trace(self, node_id: str, view: dict) -> None:
        """A KSamplerTrace node finished: keep its trace and show it."""
        self.traces[node_id] = view
        self.show_trace(node_id)

    def show_trace(self, node_id: str) -> bool:
        view = self.traces.get(node_id)
        if view is None:
            return False
        self.node_id, self.view = node_id, view
        self.maps, self.total = load_attention(view.get("attention"))
        steps = view.get("steps") or []
        schedule = view.get("schedule") or {}
        self.plot.set_schedules(schedule.get("sigmas") or {}, schedule.get("active", ""))
        self.title.setText(f"KSamplerTrace · node {node_id} — {len(steps)} steps, "
                           f"{schedule.get('active') or '?'} schedule")
        self.token_list.blockSignals(True)
        self.token_list.clear()
        shares = token_shares(self.total)
        for i, word in enumerate(view.get("tokens") or []):
            share = f"   {shares[i]:.0%}" if i < len(shares) else ""
            item = QListWidgetItem((plain_word(word) or word) + share)
            item.setData(Qt.UserRole, i)
            item.setToolTip("its share of the picture's attention to the prompt's words, over the steps from σ ≤ 1 on"
                            if share else "")
            self.token_list.addItem(item)
        self.token_list.blockSignals(False)
        tokens = view.get("tokens") or []
        if self.token is None or self.token >= len(tokens):
            self.token = 0 if tokens else None
        self.slider.blockSignals(True)
        self.slider.setRange(0, max(0, len(steps) - 1))
        self.slider.setValue(len(steps) - 1 if steps else 0)  # the finished picture first
        self.slider.blockSignals(False)
        self.set_step(self.slider.value())
        self.trace_shown.emit(node_id)
        return True

    def clear(self) -> None:
        self.traces.clear()
        self._show_empty()

    def _show_empty(self) -> None:
        self.node_id = self.view = None
        self.maps = self.total = None
        self.title.setText("Trace — run a KSamplerTrace node (Explain menu) to see each step here")
        self.slider.setRange(0, 0)
        self.step_label.setText("")
        for tile in self.tiles.values():
            tile.set_image(None)
        self.plot.set_schedules({}, "")
        self.token_list.clear()
        self.heatmap.set_content(QImage(), None, True)
        self.rank_label.setText("")

    # -- the step -------------------------------------------------------------------------------------
    @property
    def step(self) -> int:
        return self.slider.value()

    def set_step(self, step: int) -> None:
        if self.view is None:
            return
        if self.slider.value() != step:
            self.slider.setValue(step)  # comes back here through valueChanged
            return
        steps = self.view.get("steps") or []
        tiles = self.view.get("tiles") or {}
        labels = {**ROW_LABELS, **(self.view.get("row_labels") or {})}
        for name, tile in self.tiles.items():
            paths = tiles.get(name) or []
            tile.caption = labels.get(name, name)
            tile.set_image(paths[step] if step < len(paths) else None)
        if step < len(steps):
            s = steps[step]
            self.step_label.setText(f"step {step + 1}/{len(steps)}   σ {float(s.get('sigma_from', 0)):.3g} → "
                                    f"{float(s.get('sigma_to', 0)):.3g}")
        self.plot.set_step(step)
        self._show_heat()

    # -- tokens ---------------------------------------------------------------------------------------
    def _token_row(self, row: int) -> None:
        if row >= 0:
            self.show_token(row)

    def show_token(self, index: int) -> None:
        """Show the heatmap of the trace's token `index`."""
        self.token = index
        if self.token_list.currentRow() != index:
            self.token_list.blockSignals(True)
            self.token_list.setCurrentRow(index)
            self.token_list.blockSignals(False)
        self._show_heat()

    def show_word(self, word: str, position: int | None = None) -> bool:
        """A token clicked in CLIPTokenize's list: show its map (False when the trace lacks it)."""
        tokens = (self.view or {}).get("tokens") or []
        index = trace_token_index(tokens, word, position)
        if index is None:
            self.rank_label.setText(f"“{plain_word(word)}” is not among this trace's tokens")
            return False
        self.show_token(index)
        return True

    def distribution(self) -> np.ndarray | None:
        """[tokens, H, W]: the selected step's maps, or the sum over steps."""
        if self.scope.currentIndex() == 1 or self.maps is None:
            return self.total
        return self.maps[min(self.step, len(self.maps) - 1)]

    def heat_values(self) -> np.ndarray | None:
        """The selected token's map [H, W], scaled so its brightest pixel is 1."""
        import numpy as np

        dist = self.distribution()
        if dist is None or self.token is None or self.token >= len(dist):
            return None
        values = dist[self.token].astype(np.float32)
        peak = float(values.max())
        return values / peak if peak > 0 else values

    def _base_image(self) -> QImage:
        """The picture the map lies over: x̂₀ at the step (the last step's for the summed map)."""
        paths = ((self.view or {}).get("tiles") or {}).get("denoised") or []
        if not paths:
            return QImage()
        step = len(paths) - 1 if self.scope.currentIndex() == 1 else min(self.step, len(paths) - 1)
        return QImage(paths[step])

    def _show_heat(self) -> None:
        if self.view is None:
            return
        values = self.heat_values()
        self.heatmap.set_content(self._base_image(), values, overlay=self.style_box.currentIndex() == 0)
        tokens = self.view.get("tokens") or []
        if values is None:
            self.rank_label.setText("This run recorded no attention maps" if tokens else "No prompt tokens")
        elif self.token is not None and self.token < len(tokens):
            self.rank_label.setText(f"“{plain_word(tokens[self.token])}” — bright where it steered the picture; "
                                    "hover the image to rank the tokens there")

    def hover_at(self, y: int, x: int) -> list[tuple[str, float]]:
        """Rank the tokens at map pixel (y, x) and say so under the map."""
        dist = self.distribution()
        if dist is None:
            return []
        self.ranking = rank_tokens(dist, (self.view or {}).get("tokens") or [], y, x)
        text = format_ranking(self.ranking)
        # say where in the picture's own pixels (the maps may be at the latent's resolution)
        h, w = dist.shape[-2:]
        size = (self.view or {}).get("image_size") or [h, w]
        px, py = int((x + 0.5) * size[1] / w), int((y + 0.5) * size[0] / h)
        self.rank_label.setText(f"at pixel ({px}, {py}), share of the prompt's words: {text}")
        self.heatmap.setToolTip(text)
        return self.ranking

    def _hover_left(self) -> None:
        self.ranking = []
        self._show_heat()

