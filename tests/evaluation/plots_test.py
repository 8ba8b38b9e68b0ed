"""The figures' layout: what a person reads does not overlap."""

import itertools

import matplotlib.text
import numpy as np

from catdog_jax.evaluation import plots


def text_boxes(figure):
  """Window extents of every visible, non-empty text of the figure."""
  renderer = figure.canvas.get_renderer()
  texts = figure.findobj(matplotlib.text.Text)
  return [
    (text.get_text(), text.get_window_extent(renderer))
    for text in texts
    if text.get_visible() and text.get_text().strip()
  ]


def assert_no_overlap(boxes):
  for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2):
    assert not box_a.overlaps(box_b), (a, b)


def grid_figure(colorbar: bool):
  rng = np.random.default_rng(0)
  images = [rng.integers(0, 256, (160, 160, 3), np.uint8) for _ in range(8)]
  captions = [
    f'WRONG: true cat, p(dog)=0.9{i}\n'
    + plots.short_name(f'/data/PetImages/Cat/a_long_file_name_{i}x.jpeg')
    for i in range(8)
  ]
  return plots.image_grid_figure(
    images,
    captions,
    heading='Grad-CAM: where the evidence for the predicted class lies',
    colorbar_label="evidence (relative to the image's strongest)"
    if colorbar
    else None,
  )


def test_grid_captions_sit_under_their_photos_and_never_overlap():
  for colorbar in (False, True):
    figure = grid_figure(colorbar)
    figure.canvas.draw()
    boxes = text_boxes(figure)
    assert_no_overlap(boxes)
    renderer = figure.canvas.get_renderer()
    photos = [ax for ax in figure.axes if ax.images]
    assert len(photos) == 8
    for ax in photos:
      photo = ax.get_window_extent(renderer)
      caption = ax.xaxis.label.get_window_extent(renderer)
      assert caption.y1 <= photo.y0 + 1 and not caption.overlaps(photo)
      assert 'Cat/' in ax.xaxis.label.get_text()  # The file, to look up.
    # The photos fill the figure, not a corner of empty canvas.
    width, height = figure.canvas.get_width_height()
    area = sum(
      ax.get_window_extent(renderer).width
      * ax.get_window_extent(renderer).height
      for ax in photos
    )
    assert area / (width * height) > 0.45


def test_short_names_keep_the_folder_and_fit():
  assert plots.short_name('/data/train/cat.123.jpg') == 'train/cat.123.jpg'
  name = plots.short_name('/x/' + 'a' * 60 + '.jpg', width=20)
  assert len(name) == 19 and '…' in name


def test_curves_mark_validation_points_and_explain_the_gap():
  records = [{'step': s, 'train_loss': 1.0 / s, 'train_accuracy': 0.5}
             for s in range(10, 110, 10)]  # fmt: skip
  records += [
    {'step': 50, 'val_log_loss': 0.01, 'val_accuracy': 0.9},
    {'step': 100, 'val_log_loss': 0.005, 'val_accuracy': 0.95},
  ]
  note = 'Training loss is measured on augmented images; validation lower.'
  figure = plots.curves_figure(records, note)
  figure.canvas.draw()
  for ax in figure.axes:
    validation = [line for line in ax.lines if line.get_label() == 'validation']
    assert validation and validation[0].get_linestyle() == 'None'
    assert validation[0].get_marker() == 'o'
  texts = [text for text, _ in text_boxes(figure)]
  assert note in texts
  assert_no_overlap(text_boxes(figure))
