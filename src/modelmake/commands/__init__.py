"""The `modelmake` command line: status/why, compare, report, store maintenance, the generated docs."""
