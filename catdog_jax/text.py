"""How numbers read in what a person sees: counts and durations."""


def counted(count: int, noun: str) -> str:
  """'1 image', '2 images', '1,758 steps'."""
  return f'{count:,} {noun}{"" if count == 1 else "s"}'


def duration(seconds: float) -> str:
  """'40 s' under a minute and a half, else '4 min'."""
  if seconds < 90:
    return f'{seconds:.0f} s'
  return f'{seconds / 60:.0f} min'
