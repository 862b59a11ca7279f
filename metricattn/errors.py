"""The one exception type for bad input: `main` entry points print it as one line."""


class UserError(Exception):
  """Bad input from the user (config, data, workdir): the message says what and what is allowed."""


class Interrupted(Exception):
  """SIGINT or SIGTERM stopped a run after writing a checkpoint; `code` is the exit status."""

  def __init__(self, message: str, code: int):
    super().__init__(message)
    self.code = code
