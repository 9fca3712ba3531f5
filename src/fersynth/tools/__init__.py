"""Tooling around the pipeline, not part of it: experiments and their comparison over seeds, reports for pull
requests, the committed baseline's check, presets. No stage imports it, so editing it reruns nothing."""
