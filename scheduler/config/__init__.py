"""``scheduler.conf`` in ZMailer syntax: lexer, values, parser, clauses and host globs."""
