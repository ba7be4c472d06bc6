"""Adapters for the paper's datasets in the layouts their publishers ship (issue 9).

One module per format; each registers itself with :func:`uniseg_cli.data.register_format` when
imported (``uniseg_cli.data.FORMAT_MODULES`` lists them). ``docs/datasets.md`` has the table of
layouts, classes, ignore rules and conversions.
"""
