"""The message bus on kombu: topology, a confirming publisher and a consumer base."""
