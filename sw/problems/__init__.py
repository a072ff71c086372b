"""Built-in problem plugins (registered as `mpq_codesign.problems` entry points; the protocol is `sw.search.plugin`)."""
