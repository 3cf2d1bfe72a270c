"""A restore run over a collection: its settings, the plan (inputs, outputs, what is done
already), the stages (read, restore, encode, write), the run with its executor and stops, the
dry run, and the Parquet manifest that accounts for every input."""
