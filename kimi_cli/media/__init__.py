"""Files in: detection by content, then images, PDFs and videos turned into typed parts."""
