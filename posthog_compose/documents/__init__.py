"""Documents: files generated from the manifest (.env.example, the README's variable section) and
the handbook's build hooks (generated reference pages)."""
