"""The error every part of a run's setup raises (`Task`, `LoopSettings`,
`nnx_model`, `loop.build`), in a module of its own so that all of them can
import it without importing each other."""


class SetupError(ValueError):
  """A task that cannot run as given; raised before any work starts."""
