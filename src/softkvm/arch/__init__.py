"""Pure architecture facts: encodings, register fields, ids. No state, no Unicorn."""
