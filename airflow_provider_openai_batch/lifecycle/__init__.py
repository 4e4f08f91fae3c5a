"""The batch job's lifecycle: run state, the pure planner, the submission ledger, the wait and the landing."""
