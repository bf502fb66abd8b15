"""The audience as editors see it: finding subscribers, their history, imports and exports."""
