-- bench/db/notes_mix.lua: wrk script, alternately POST /notes and GET /notes/1.
local n = 0
request = function()
  n = n + 1
  if n % 2 == 1 then
    return wrk.format("POST", "/notes", {["Content-Type"] = "application/json"},
                      '{"text":"a note written by bench/db"}')
  end
  return wrk.format("GET", "/notes/1")
end
