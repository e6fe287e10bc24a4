"""One blueprint per area of the site. Views hold no CQL: they call the repository."""
