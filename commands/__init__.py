"""The top floor: the ``discorecs`` command, the demo and the background jobs they start.

The only package allowed to import every other one. Below it, the applications
(``spark_jobs``, ``streaming``, ``webapp``, ``kafka_cluster_scripts``) import the core package
``discorecs`` and never each other, and ``discorecs`` imports none of them.
"""
