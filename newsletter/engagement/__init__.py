"""What readers do with the email: clicks, and the interests learned from them."""
