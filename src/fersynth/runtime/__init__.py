"""How a run executes, apart from what it computes: device and process placement, execution settings, worker
pools, seeding, progress bars, dvclive curves, torch file reading, and atomic writes."""
