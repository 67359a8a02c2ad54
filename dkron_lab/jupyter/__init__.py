"""dkron-lab in Jupyter: the server extension (``extension``), the ``%dkron`` magics
(``magics``) and the dashboard widget (``widget``).

Nothing is imported here: the kernel side (magics, widget) must not pull in the server side
(jupyter_server, tornado, the node), and the other way round.
"""
