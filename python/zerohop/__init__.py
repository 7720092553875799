"""zerohop."""
