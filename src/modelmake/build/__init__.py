"""The build graph: recipes -> typed steps -> doit tasks; keys, the runner, records, targets, the doit backend and the build's console output. The only package that knows doit's task format."""
