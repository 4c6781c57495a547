"""The napari bridge: read prompts and planes from napari layers, write Labels and the preview.

No widgets and no Qt: everything here works on a ``ViewerModel`` in a script. Imports the engine
and the model below it.
"""
