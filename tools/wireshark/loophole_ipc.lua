-- Wireshark dissector for Loophole IPC (protocol version 1), the TCP loopback protocol between
-- the audio engine (Signal) and its UI (Aura). Wire format: docs/specs/ipc/framing.md,
-- envelope.md, errors.md. Install and use: tools/wireshark/README.md.
--
-- Each direction of a connection is an 8-byte preface (89 4c 50 48 0d 0a 1a 0a) and then
-- frames: an 8-byte header (u32 big-endian payload length, u8 encoding, u8 flags, u16
-- reserved) and the payload (encoding 1: one JSON object, the envelope). With flag bit 0
-- (ATTACHMENT, engine -> client, framing.md section 3.1) the u16 is `json_len`: the envelope is
-- the first json_len bytes (space-padded to a multiple of 8), raw little-endian f32 values follow.
--
-- Registered as a heuristic TCP dissector (a segment starting with the preface claims the
-- conversation) and for "Decode As" on a TCP port (`-d tcp.port==PORT,loophole`, or the
-- `loophole.port` preference).

local PREFACE = "\x89LPH\r\n\x1a\n"
local HEADER_LEN = 8
-- The largest max_frame an engine may be configured with (framing.md section 4).
local MAX_FRAME_LIMIT = 16777216

local proto = Proto("loophole", "Loophole IPC")

local encodings = { [1] = "JSON" }

local pf = {
    preface = ProtoField.bytes("loophole.preface", "Preface"),
    length = ProtoField.uint32("loophole.length", "Payload length", base.DEC),
    encoding = ProtoField.uint8("loophole.encoding", "Encoding", base.HEX, encodings),
    flags = ProtoField.uint8("loophole.flags", "Flags", base.HEX),
    reserved = ProtoField.uint16("loophole.reserved", "Reserved", base.HEX),
    json_len = ProtoField.uint16("loophole.json_len", "JSON length (ATTACHMENT)", base.DEC),
    attachment = ProtoField.bytes("loophole.attachment", "Attachment (f32 little-endian)"),
    values = ProtoField.uint32("loophole.attachment.values", "Attachment values (f32)", base.DEC),
    payload = ProtoField.bytes("loophole.payload", "Payload"),
    type = ProtoField.string("loophole.type", "Type"),
    name = ProtoField.string("loophole.name", "Name"),
    id = ProtoField.uint32("loophole.id", "Command id", base.DEC),
    ref = ProtoField.uint32("loophole.ref", "Answers command id", base.DEC),
    error_code = ProtoField.string("loophole.error_code", "Error code"),
    request_in = ProtoField.framenum("loophole.request_in", "Answer to the command in frame",
        base.NONE, frametype.REQUEST),
    response_in = ProtoField.framenum("loophole.response_in", "Answered in frame",
        base.NONE, frametype.RESPONSE),
    time = ProtoField.relative_time("loophole.time", "Response time"),
}
proto.fields = pf

local ex = {
    oversize = ProtoExpert.new("loophole.length.oversize", "Payload length exceeds max_frame",
        expert.group.MALFORMED, expert.severity.WARN),
    zero = ProtoExpert.new("loophole.length.zero", "Zero payload length (invalid_json)",
        expert.group.MALFORMED, expert.severity.WARN),
    encoding = ProtoExpert.new("loophole.encoding.unknown", "Unknown encoding (unsupported_encoding)",
        expert.group.PROTOCOL, expert.severity.WARN),
    flags = ProtoExpert.new("loophole.flags.nonzero", "Non-zero flags (bad_header)",
        expert.group.PROTOCOL, expert.severity.WARN),
    reserved = ProtoExpert.new("loophole.reserved.nonzero", "Non-zero reserved field (bad_header)",
        expert.group.PROTOCOL, expert.severity.WARN),
    json_len = ProtoExpert.new("loophole.json_len.invalid",
        "Malformed json_len (not a multiple of 8, below 8, beyond the payload, or a ragged f32 tail)",
        expert.group.MALFORMED, expert.severity.WARN),
    attachment = ProtoExpert.new("loophole.attachment.mismatch",
        "The envelope's attachment member does not match the frame's attachment",
        expert.group.MALFORMED, expert.severity.WARN),
    envelope = ProtoExpert.new("loophole.envelope.invalid", "Payload is not a valid envelope",
        expert.group.MALFORMED, expert.severity.WARN),
    unanswered = ProtoExpert.new("loophole.ref.unmatched", "Answer to a command not in the capture",
        expert.group.SEQUENCE, expert.severity.NOTE),
    error = ProtoExpert.new("loophole.error", "Error frame",
        expert.group.RESPONSE_CODE, expert.severity.NOTE),
}
proto.experts = { ex.oversize, ex.zero, ex.encoding, ex.flags, ex.reserved, ex.json_len,
    ex.attachment, ex.envelope, ex.unanswered, ex.error }

local FLAG_ATTACHMENT = 0x01

proto.prefs.max_frame = Pref.uint("Maximum frame size", 65536,
    "Largest payload length the engine accepts (its max_frame, 64 .. 16777216). A longer " ..
    "length gets an expert warning and is not reassembled (the engine would close).")
proto.prefs.port = Pref.uint("TCP port", 0, "Also decode this TCP port as Loophole (0: none)")

local json_dissector = Dissector.get("json")
local tcp_stream = Field.new("tcp.stream")

------------------------------------------------------------------------------------------------
-- A small JSON reader: enough to read the envelope's members (type, name, id, ref, body.code).
-- Returns the value and the position after it, or nil on a syntax error.

local parse_value

local function skip_ws(s, i)
    return s:find("[^ \t\r\n]", i) or (#s + 1)
end

local escapes = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n",
    r = "\r", t = "\t" }

local function parse_string(s, i)
    -- s:sub(i, i) == '"'
    local out, j = {}, i + 1
    while true do
        local c = s:sub(j, j)
        if c == "" then return nil end
        if c == '"' then return table.concat(out), j + 1 end
        if c == "\\" then
            local e = s:sub(j + 1, j + 1)
            if e == "u" then
                local hex = s:sub(j + 2, j + 5)
                if not hex:match("^%x%x%x%x$") then return nil end
                out[#out + 1] = "\\u" .. hex -- kept escaped: only names and codes are used
                j = j + 6
            elseif escapes[e] then
                out[#out + 1] = escapes[e]
                j = j + 2
            else
                return nil
            end
        elseif c:byte() < 0x20 then
            return nil
        else
            out[#out + 1] = c
            j = j + 1
        end
    end
end

local function parse_container(s, i, close, member)
    local obj, seen = {}, {}
    i = skip_ws(s, i + 1)
    if s:sub(i, i) == close then return obj, i + 1 end
    while true do
        local key
        if member then
            if s:sub(i, i) ~= '"' then return nil end
            key, i = parse_string(s, i)
            if not key then return nil end
            i = skip_ws(s, i)
            if s:sub(i, i) ~= ":" then return nil end
            i = skip_ws(s, i + 1)
        end
        local v
        v, i = parse_value(s, i)
        if i == nil then return nil end
        if member then
            if seen[key] then obj.__duplicate = true end
            seen[key] = true
            obj[key] = v
        else
            obj[#obj + 1] = v
        end
        i = skip_ws(s, i)
        local c = s:sub(i, i)
        if c == close then return obj, i + 1 end
        if c ~= "," then return nil end
        i = skip_ws(s, i + 1)
    end
end

parse_value = function(s, i)
    local c = s:sub(i, i)
    if c == "{" then return parse_container(s, i, "}", true) end
    if c == "[" then return parse_container(s, i, "]", false) end
    if c == '"' then return parse_string(s, i) end
    if s:sub(i, i + 3) == "true" then return true, i + 4 end
    if s:sub(i, i + 4) == "false" then return false, i + 5 end
    if s:sub(i, i + 3) == "null" then return false, i + 4 end
    local num = s:match("^-?%d+%.?%d*[eE]?[-+]?%d*", i)
    if num and #num > 0 then
        local v = tonumber(num)
        if v == nil then return nil end
        return { number = v, integer = num:match("^-?%d+$") ~= nil }, i + #num
    end
    return nil
end

-- The envelope of a payload string, or nil with a reason.
local function read_envelope(s)
    local i = skip_ws(s, 1)
    if s:sub(i, i) ~= "{" then return nil, "not a JSON object" end
    local env, j = parse_value(s, i)
    if env == nil then return nil, "invalid JSON" end
    if skip_ws(s, j) <= #s then return nil, "bytes after the JSON object" end
    if env.__duplicate then return nil, "duplicated envelope key" end
    if type(env.type) ~= "string" then return nil, "no type" end
    if type(env.name) ~= "string" then return nil, "no name" end
    return env
end

local function u32_of(v)
    if type(v) == "table" and v.integer and v.number >= 0 and v.number <= 4294967295 then
        return v.number
    end
    return nil
end

------------------------------------------------------------------------------------------------
-- Request/response tracking, per TCP stream: the last command with each id (frame number and
-- time), and the results per frame so later passes (the GUI, tshark -2) show the same.

local commands = {}  -- commands[stream][id] = { frame = n, ts = seconds since the first packet, key = k }
local answers = {}   -- answers[key] = { request = n, delta = seconds } for an answer
local responses = {} -- responses[key] = frame number of the answer, for a command

local function frame_key(pinfo, index)
    return pinfo.number * 1000 + index
end

-- Seconds (a float) as an NSTime, rounded to the microsecond (pcap's resolution).
local function nstime(seconds)
    local us = math.floor(seconds * 1e6 + 0.5)
    return NSTime.new(math.floor(us / 1e6), (us % 1000000) * 1000)
end

local function track(pinfo, env, key, id, ref, subtree)
    local stream = tcp_stream()
    stream = stream and stream.value or -1
    if not pinfo.visited then
        commands[stream] = commands[stream] or {}
        if env.type == "command" and id then
            commands[stream][id] = { frame = pinfo.number, ts = pinfo.rel_ts, key = key }
        elseif ref then
            local cmd = commands[stream][ref]
            if cmd and cmd.frame <= pinfo.number then
                answers[key] = { request = cmd.frame, delta = pinfo.rel_ts - cmd.ts }
                responses[cmd.key] = pinfo.number
                commands[stream][ref] = nil -- exactly one answer per command
            end
        end
    end
    if env.type == "command" and responses[key] then
        subtree:add(pf.response_in, responses[key]):set_generated()
    end
    if ref then
        local a = answers[key]
        if a then
            subtree:add(pf.request_in, a.request):set_generated()
            subtree:add(pf.time, nstime(a.delta)):set_generated()
        else
            subtree:add_proto_expert_info(ex.unanswered)
        end
    end
end

------------------------------------------------------------------------------------------------

-- Dissects one frame (header at `offset`, `avail` bytes of it present); returns its Info text.
local function dissect_frame(tvb, pinfo, tree, offset, avail, index, truncated)
    local plen = tvb(offset, 4):uint()
    local total = HEADER_LEN + (truncated and (avail - HEADER_LEN) or plen)
    local subtree = tree:add(proto, tvb(offset, total), "Loophole IPC frame")
    local lt = subtree:add(pf.length, tvb(offset, 4))
    local enc = tvb(offset + 4, 1):uint()
    local et = subtree:add(pf.encoding, tvb(offset + 4, 1))
    local flags = tvb(offset + 5, 1):uint()
    local ft = subtree:add(pf.flags, tvb(offset + 5, 1))
    local with_attachment = flags == FLAG_ATTACHMENT
    local rt = subtree:add(with_attachment and pf.json_len or pf.reserved, tvb(offset + 6, 2))
    if truncated then
        lt:add_proto_expert_info(ex.oversize, string.format(
            "Payload length %d exceeds max_frame %d (frame_too_large): not reassembled",
            plen, proto.prefs.max_frame))
    elseif plen == 0 then
        lt:add_proto_expert_info(ex.zero)
    end
    if flags ~= 0 and not with_attachment then ft:add_proto_expert_info(ex.flags) end
    if not with_attachment and tvb(offset + 6, 2):uint() ~= 0 then
        rt:add_proto_expert_info(ex.reserved)
    end
    if enc ~= 1 then et:add_proto_expert_info(ex.encoding) end
    local body_len = total - HEADER_LEN
    if body_len <= 0 then
        return truncated and "oversize frame" or "empty frame"
    end
    local body = tvb(offset + HEADER_LEN, body_len)
    subtree:add(pf.payload, body):set_hidden()
    if enc ~= 1 or truncated then
        return truncated and "oversize frame" or string.format("encoding 0x%02x", enc)
    end
    local json, att_len = body, 0
    if with_attachment then
        local json_len = tvb(offset + 6, 2):uint()
        att_len = body_len - json_len
        if json_len < 8 or json_len % 8 ~= 0 or att_len < 0 or att_len % 4 ~= 0 then
            rt:add_proto_expert_info(ex.json_len)
            return "malformed json_len"
        end
        json = tvb(offset + HEADER_LEN, json_len)
        if att_len > 0 then
            local at = subtree:add(pf.attachment, tvb(offset + HEADER_LEN + json_len, att_len))
            at:set_text(string.format("Attachment: %d f32 little-endian values (%d bytes)",
                att_len / 4, att_len))
            subtree:add(pf.values, tvb(offset + HEADER_LEN + json_len, att_len), att_len / 4)
                :set_generated()
        end
    end
    json_dissector:call(json:tvb(), pinfo, subtree)
    local env, why = read_envelope(json:raw())
    if not env then
        subtree:add_proto_expert_info(ex.envelope, "Payload is not a valid envelope: " .. why)
        return "invalid envelope"
    end
    if with_attachment then
        local a = env.attachment
        if type(a) ~= "table" or u32_of(a.bytes) ~= att_len or a.format ~= "f32le" then
            subtree:add_proto_expert_info(ex.attachment)
        end
    elseif env.attachment ~= nil then
        subtree:add_proto_expert_info(ex.attachment)
    end
    subtree:add(pf.type, body, env.type)
    subtree:add(pf.name, body, env.name)
    local id, ref = u32_of(env.id), u32_of(env.ref)
    local info = env.type .. " " .. env.name
    if env.type == "command" and id then
        subtree:add(pf.id, body, id)
        info = info .. " id=" .. string.format("%d", id)
    end
    if ref and (env.type == "reply" or env.type == "error") then
        subtree:add(pf.ref, body, ref)
        info = info .. " ref=" .. string.format("%d", ref)
    else
        ref = nil
    end
    if env.type == "error" and type(env.body) == "table" and type(env.body.code) == "string" then
        subtree:add(pf.error_code, body, env.body.code)
        subtree:add_proto_expert_info(ex.error, "Error: " .. env.body.code)
        info = info .. " " .. env.body.code
    end
    if att_len > 0 then info = info .. string.format(" +%d f32", att_len / 4) end
    subtree:append_text(": " .. info)
    track(pinfo, env, frame_key(pinfo, index), id, ref, subtree)
    return info
end

function proto.dissector(tvb, pinfo, tree)
    local len = tvb:len()
    local offset, index, infos = 0, 0, {}
    while offset < len do
        local remaining = len - offset
        if remaining < HEADER_LEN then
            -- A header (or preface) split across segments: ask TCP for more.
            pinfo.desegment_offset = offset
            pinfo.desegment_len = DESEGMENT_ONE_MORE_SEGMENT
            break
        end
        if tvb(offset, HEADER_LEN):raw() == PREFACE then
            -- A frame header never equals the preface (its encoding byte would be 0x0d).
            tree:add(proto, tvb(offset, HEADER_LEN), "Loophole IPC preface")
                :add(pf.preface, tvb(offset, HEADER_LEN))
            infos[#infos + 1] = "preface"
            offset = offset + HEADER_LEN
        else
            local plen = tvb(offset, 4):uint()
            local limit = math.min(proto.prefs.max_frame, MAX_FRAME_LIMIT)
            if plen > limit then
                -- The engine closes at this header and never reads the payload: show what is
                -- here and do not wait for the declared bytes.
                index = index + 1
                infos[#infos + 1] = dissect_frame(tvb, pinfo, tree, offset, remaining, index, true)
                offset = len
            elseif remaining < HEADER_LEN + plen then
                pinfo.desegment_offset = offset
                pinfo.desegment_len = HEADER_LEN + plen - remaining
                break
            else
                index = index + 1
                infos[#infos + 1] = dissect_frame(tvb, pinfo, tree, offset, remaining, index, false)
                offset = offset + HEADER_LEN + plen
            end
        end
    end
    if #infos > 0 then
        pinfo.cols.protocol = "Loophole"
        pinfo.cols.info = table.concat(infos, ", ")
    end
    return len
end

-- Heuristic: a TCP segment that starts with the preface (or, shorter than 8 bytes, with at
-- least its first 4 bytes) claims the conversation for this dissector.
local function heuristic(tvb, pinfo, tree)
    local len = tvb:len()
    if len < 4 then return false end
    local n = math.min(len, HEADER_LEN)
    if tvb(0, n):raw() ~= PREFACE:sub(1, n) then return false end
    pinfo.conversation = proto
    proto.dissector(tvb, pinfo, tree)
    return true
end

proto:register_heuristic("tcp", heuristic)

local tcp_port = DissectorTable.get("tcp.port")
tcp_port:add_for_decode_as(proto)

local registered_port = 0
function proto.prefs_changed()
    if registered_port ~= 0 then tcp_port:remove(registered_port, proto) end
    registered_port = proto.prefs.port
    if registered_port ~= 0 then tcp_port:add(registered_port, proto) end
end
