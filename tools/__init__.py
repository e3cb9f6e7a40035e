"""The tools layer, above the platform: the ``adept`` command (``tools.cli``) and ``adept eval``
(``tools.eval``). They start the platform (``services.embedded``), run fine-tunes (``training``)
and call running platforms; nothing below imports them (``make lint`` holds the layers).
"""
