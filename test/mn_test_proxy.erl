%% A TCP proxy between a client under test and a server on loopback, whose
%% behaviour a test changes while connections are open:
%%
%%   pass               forwards both ways (the start);
%%   {delay, Ms}        forwards each chunk Ms late: a slow server;
%%   stall              accepts and forwards nothing, keeping it: a server
%%                      or network that went silent; back in `pass' the kept
%%                      bytes go on in order, as TCP would deliver them after
%%                      a partition heals;
%%   cut                forwards half of the server's next chunk on each
%%                      connection, then closes it: cut mid-response;
%%   {cut_requests, N}  the next N chunks clients send close their
%%                      connection instead of being forwarded (counted down);
%%   refuse             closes every open connection and stops listening, so
%%                      new ones are refused: the server is gone.
%%
%% Shared by the suites (ldap_SUITE, reliability_SUITE); no process of it
%% is linked to the caller, so a test's crash does not take it down early.
-module(mn_test_proxy).
-export([start/1, start/2, port/1, set/2, mode/1, stop/1, connections/1]).

-type mode() :: pass | {delay, pos_integer()} | stall | cut | {cut_requests, non_neg_integer()}
              | refuse.
-opaque proxy() :: #{port := inet:port_number(), table := ets:tid(), acceptor := pid()}.
-export_type([proxy/0, mode/0]).

%% How often a connection holding stalled bytes looks at the mode again.
-define(POLL_MS, 20).

-spec start(inet:port_number()) -> proxy().
start(TargetPort) ->
    start(TargetPort, 0).

%% ListenPort 0: any free port.
-spec start(inet:port_number(), inet:port_number()) -> proxy().
start(TargetPort, ListenPort) ->
    Self = self(),
    Acceptor = spawn(fun() ->
                             Table = ets:new(mn_test_proxy, [public, set]),
                             ets:insert(Table, {mode, pass}),
                             L = listen(ListenPort),
                             {ok, Port} = inet:port(L),
                             Self ! {?MODULE, self(), Port, Table},
                             accept(L, Port, TargetPort, Table)
                     end),
    receive
        {?MODULE, Acceptor, Port, Table} ->
            #{port => Port, table => Table, acceptor => Acceptor}
    after 5000 -> error(proxy_did_not_start)
    end.

listen(Port) ->
    {ok, L} = gen_tcp:listen(Port, [binary, {ip, {127, 0, 0, 1}}, {active, false}, {reuseaddr, true},
                                    {backlog, 1024}]),
    L.

-spec port(proxy()) -> inet:port_number().
port(#{port := Port}) -> Port.

-spec mode(proxy()) -> mode().
mode(#{table := T}) -> current(T).

-spec set(proxy(), mode()) -> ok.
set(#{table := T}, Mode) ->
    ets:insert(T, {mode, Mode}),
    %% Open connections see a refusal at once, not on their next chunk.
    [Pid ! refuse || Mode =:= refuse, {{conn, Pid}} <- ets:match(T, {'$1'}), is_pid(Pid)],
    ok.

%% Connections open through the proxy now.
-spec connections(proxy()) -> non_neg_integer().
connections(#{table := T}) ->
    length(ets:match(T, {{conn, '_'}})).

-spec stop(proxy()) -> ok.
stop(#{acceptor := A} = P) ->
    set(P, refuse),
    exit(A, kill),
    ok.

%% A stopped proxy's table is gone: its connections close.
current(T) ->
    try ets:lookup(T, mode) of
        [{mode, M}] -> M;
        [] -> refuse
    catch error:badarg -> refuse
    end.

%% While refusing, nothing listens on the port: connections are refused
%% as by a host whose server is down.
accept(closed, Port, TargetPort, T) ->
    case current(T) of
        refuse -> timer:sleep(?POLL_MS), accept(closed, Port, TargetPort, T);
        _ -> accept(listen(Port), Port, TargetPort, T)
    end;
accept(L, Port, TargetPort, T) ->
    case current(T) of
        refuse ->
            gen_tcp:close(L),
            accept(closed, Port, TargetPort, T);
        _ ->
            case gen_tcp:accept(L, ?POLL_MS) of
                {ok, C} ->
                    Pid = spawn(fun() -> receive {go, C} -> connect(C, TargetPort, T) end end),
                    ok = gen_tcp:controlling_process(C, Pid),
                    Pid ! {go, C};
                {error, timeout} -> ok
            end,
            accept(L, Port, TargetPort, T)
    end.

connect(C, TargetPort, T) ->
    case gen_tcp:connect({127, 0, 0, 1}, TargetPort, [binary, {active, false}, {nodelay, true}], 5000) of
        {ok, S} ->
            ets:insert(T, {{conn, self()}}),
            ok = inet:setopts(C, [{nodelay, true}]),
            relay(#{c => C, s => S, t => T, to_s => [], to_c => []});
        {error, _} ->
            gen_tcp:close(C)
    end.

relay(#{c := C, s := S} = St) ->
    ok = inet:setopts(C, [{active, once}]),
    ok = inet:setopts(S, [{active, once}]),
    wait(St).

%% Sockets stay armed (`active, once') between chunks; `wait' is entered
%% with both armed.
wait(#{c := C, s := S} = St) ->
    receive
        refuse -> close(St);
        {tcp, C, Data} -> client_chunk(Data, St);
        {tcp, S, Data} -> server_chunk(Data, St);
        {tcp_closed, _} -> flush_then_close(St);
        {tcp_error, _, _} -> close(St)
    after ?POLL_MS -> wait(flush(St))
    end.

client_chunk(Data, #{c := C, s := S, t := T} = St) ->
    case current(T) of
        refuse -> close(St);
        stall -> rearm(C, St#{to_s := [maps:get(to_s, St), Data]});
        {cut_requests, N} when N > 0 ->
            ets:insert(T, {mode, {cut_requests, N - 1}}),
            close(St);
        {delay, Ms} -> timer:sleep(Ms), send(S, Data, St), rearm(C, St);
        _ -> send(S, Data, St), rearm(C, St)
    end.

server_chunk(Data, #{c := C, s := S, t := T} = St) ->
    case current(T) of
        refuse -> close(St);
        stall -> rearm(S, St#{to_c := [maps:get(to_c, St), Data]});
        cut ->
            _ = gen_tcp:send(C, binary:part(Data, 0, byte_size(Data) div 2)),
            close(St);
        {delay, Ms} -> timer:sleep(Ms), send(C, Data, St), rearm(S, St);
        _ -> send(C, Data, St), rearm(S, St)
    end.

rearm(Sock, St) ->
    ok = inet:setopts(Sock, [{active, once}]),
    wait(flush(St)).

%% Kept bytes go on once the mode lets them.
flush(#{c := C, s := S, t := T, to_s := ToS, to_c := ToC} = St) ->
    case current(T) of
        stall -> St;
        _ ->
            ToS =/= [] andalso gen_tcp:send(S, ToS),
            ToC =/= [] andalso gen_tcp:send(C, ToC),
            St#{to_s := [], to_c := []}
    end.

send(Sock, Data, St) ->
    case gen_tcp:send(Sock, Data) of
        ok -> ok;
        {error, _} -> close(St)
    end.

flush_then_close(St) ->
    _ = flush(St),
    close(St).

close(#{c := C, s := S, t := T}) ->
    gen_tcp:close(C),
    gen_tcp:close(S),
    catch ets:delete(T, {conn, self()}),
    exit(normal).
