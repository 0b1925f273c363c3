-- Each connection waits 2 ms between requests: an API load that leaves CPU to spare.
function delay()
  return 2
end
