"""The one exception type that means "the user asked for something we cannot do"."""


class UserError(Exception):
    """A problem with the user's input (flags, file lists, images, checkpoints).

    `main.py` turns it into a short message on stderr and exit status 2, without a traceback.
    The message must name the flag, file and line at fault.
    """
