"""What people read: figures and the run summary."""
