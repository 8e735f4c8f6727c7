DROP TABLE legacy_move_progress;
