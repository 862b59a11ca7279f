"""The one exception type for bad input: `main` entry points print it as one line."""


class UserError(Exception):
  """Bad input from the user (config, data, workdir): the message says what and what is allowed."""
