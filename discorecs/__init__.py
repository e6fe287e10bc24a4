"""discorecs: a recommendation engine for vinyl collectors, built as a lambda architecture.

This package holds what every part shares (settings, genres, topics, event schema, storage
paths, Cassandra access, the Spark session builder) and the local service manager behind the
``discorecs`` command. The batch jobs (``spark_jobs``), the stream (``streaming``) and the site
(``webapp``) import it, and so do Spark's Python workers.
"""

__version__ = "0.1.0"
