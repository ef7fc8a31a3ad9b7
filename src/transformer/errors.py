"""The one exception type for mistakes a user can fix: a missing or malformed file, a bad
option, an unknown key. Its message says what and where (file, line, key). The command
line prints it on one line and exits with code 2; anything else is a bug and may raise.
"""


class UserError(Exception):
    """A bad input or option; `str(error)` is the one-line message shown to the user."""



def one_line(error: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message, at most `limit` characters: what a
    UserError about it quotes (the command line prints exactly one line)."""
    lines = str(error).strip().splitlines()
    return (lines[0].strip() if lines else type(error).__name__)[:limit]
