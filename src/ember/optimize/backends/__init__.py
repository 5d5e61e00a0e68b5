"""One module per engine; each registers its config type's builder and loader with the registry."""
