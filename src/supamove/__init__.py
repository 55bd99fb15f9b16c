"""supamove: move an application off Supabase, with proof that nothing was lost."""

from __future__ import annotations

__version__ = "0.1.0"
