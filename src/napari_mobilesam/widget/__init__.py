"""The dock widget: Qt and magicgui controls, thread workers, status texts.

The top layer; it may import everything below it (layers, engine, model).
"""
