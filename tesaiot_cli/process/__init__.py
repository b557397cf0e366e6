"""What a tesaiot process sets up before it runs: ``lean`` (pyarrow never imports pandas
for us), ``limits`` (enough file descriptors for per-device connections)."""
