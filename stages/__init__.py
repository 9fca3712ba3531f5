"""CLI glue: one Typer command per DVC stage; the work happens in `fersynth`."""
