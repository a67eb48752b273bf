"""The only code that calls libvirt: the connection wrapper, the XML it is given, and the translation
of libvirt's states and events into ours."""
