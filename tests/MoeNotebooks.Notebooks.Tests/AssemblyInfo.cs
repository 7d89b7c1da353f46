// Notebook runs change the process-wide working directory and load assemblies into the process: run tests one at a time.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
