%% The riak pool type and mongoose_riak, through the NIF, against
%% test/servers/riak_server.py: no Riak can run here, so a test server
%% written from riak_pb's specifications stands in (vclocks and siblings,
%% bucket types, data types, 2i, search, mapreduce, streamed listings,
%% STARTTLS and authentication, faults on command). Basho's Python client
%% (riak 2.7.0, in the virtualenv scripts/setup.sh makes) checks that
%% server in independent_client_passes.
%%
%% riakc is not here, so its records are declared below as they are in
%% riakc 2.5.3 (MongooseIM 5.1.0's), and the few riakc functions that
%% MongooseIM's callers apply to answers are written out in the tests.
-module(riak_SUITE).
-compile([export_all, nowarn_export_all]).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-record(riakc_obj, {bucket, key, vclock, contents, updatemetadata, updatevalue}).
-record(map, {value = [], updates = [], removes = [], context}).
-record(set, {value = [], adds = [], removes = [], context}).
-record(counter, {value = 0, increment}).
-record(register, {value = <<>>, new_value}).
-record(flag, {value = false, op, context}).
-record(index_results_v1, {keys, terms, continuation}).
-record(search_results, {docs, max_score, num_found}).

all() ->
    [{group, api}, {group, failures}, {group, security}].

groups() ->
    [{api, [], [independent_client_passes, put_get_delete, notfound_and_options,
                siblings_on_a_stale_vclock, objects_as_mongooseim_writes_them,
                map_update_and_fetch_round_trip, sets_and_counters, list_keys_is_streamed,
                list_buckets, index_exact_and_range, index_pages, search_on_an_index,
                mapred_counts_and_values]},
     {failures, [], [server_errors, dropped_connection_then_recovery,
                     idle_connection_closed_is_replaced, stall_answered_within_call_timeout,
                     bad_requests_are_refused, server_down, config_errors,
                     available_worker_is_refused, callback_module]},
     {security, [], [credentials_start_tls_and_authenticate, wrong_password_fails_the_start,
                     wrong_ca_fails_the_start, server_without_security]}].

init_per_suite(Config) ->
    ok = mongoose_wpool:ensure_started(),
    mn_test_venv:python(),
    Config.

end_per_suite(_Config) -> ok.

init_per_group(security, Config) ->
    Certs = mn_test_certs:make(?config(priv_dir, Config)),
    [{certs, Certs} | Config];
init_per_group(_, Config) ->
    Args = ["--search-index", "messages=search_type", "--datatype", "users=map"],
    [{server, start_server(Args)} | Config].

end_per_group(security, _Config) -> ok;
end_per_group(_, Config) ->
    stop_server(?config(server, Config)).

init_per_testcase(_, Config) ->
    case ?config(server, Config) of
        undefined -> ok;
        Server -> control(Server, "reset")
    end,
    Config.

end_per_testcase(_, _Config) ->
    mongoose_wpool:stop(),
    ok.

%%--------------------------------------------------------------------
%% Helpers
%%--------------------------------------------------------------------

%% Fault commands go to the server as lines on its standard input.
start_server(Args) ->
    mn_test_venv:start_server("riak_server.py", ["--port", "0" | Args], [port]).

control(Server, Line) ->
    {ok, <<>>} = mn_test_venv:ask(Server, Line),
    ok.

accepted(Server) ->
    {ok, <<" ", N/binary>>} = mn_test_venv:ask(Server, "accepted"),
    binary_to_integer(N).

stop_server(Server) ->
    mn_test_venv:stop_server(Server).

port_of(Config) -> maps:get(port, ?config(server, Config)).

start_pool(Config) ->
    start_pool(port_of(Config), [], #{}).

start_pool(Port, PoolOpts, ConnOpts) ->
    mongoose_wpool:start(riak, global, default, PoolOpts,
                         maps:merge(#{address => "127.0.0.1", port => Port}, ConnOpts)).

%% riakc_obj:new/3, riakc_obj:get_value/1 and riakc_obj:get_update_metadata/1.
new_obj(Bucket, Key, Value) ->
    #riakc_obj{bucket = Bucket, key = Key, contents = [], updatevalue = Value}.

value(#riakc_obj{contents = [{_, V}]}) -> V.

metadata(#riakc_obj{contents = [{MD, _}]}) -> MD.

%% riakc_map:to_op/1 and its kin, for the updates MongooseIM's callers send.
map_to_op(#map{updates = U, removes = R, context = C}) ->
    Updates = [{remove, K} || K <- R] ++
        orddict:fold(fun(K, V, Acc) ->
                             case field_op(V) of
                                 undefined -> Acc;
                                 Op -> [{update, K, Op} | Acc]
                             end
                     end, [], U),
    case Updates of
        [] -> undefined;
        _ -> {map, {update, Updates}, C}
    end.

field_op(#register{new_value = undefined}) -> undefined;
field_op(#register{new_value = V}) -> {assign, V};
field_op(#counter{increment = I}) when is_integer(I) -> {increment, I};
field_op(#counter{}) -> undefined;
field_op(#flag{op = Op}) -> Op;
field_op(#set{adds = [], removes = []}) -> undefined;
field_op(#set{adds = A, removes = []}) -> {add_all, A};
field_op(#set{adds = [], removes = R}) -> {remove_all, R};
field_op(#set{adds = A, removes = R}) -> {update, [{remove_all, R}, {add_all, A}]};
field_op(#map{} = M) ->
    case map_to_op(M) of
        undefined -> undefined;
        {map, Op, _} -> Op
    end.

set_register(V) -> fun(R) -> R#register{new_value = V} end.

%%--------------------------------------------------------------------
%% The API
%%--------------------------------------------------------------------

independent_client_passes(Config) ->
    mn_test_venv:client_passes("riak_client_check.py", [integer_to_list(port_of(Config))]).

put_get_delete(Config) ->
    {ok, _} = start_pool(Config),
    Obj = new_obj(<<"bucket">>, <<"k1">>, <<"hello">>),
    ?assertEqual(ok, mongoose_riak:put(Obj)),
    {ok, Got} = mongoose_riak:get(<<"bucket">>, <<"k1">>),
    ?assertMatch(#riakc_obj{bucket = <<"bucket">>, key = <<"k1">>, vclock = <<_/binary>>,
                            updatemetadata = undefined, updatevalue = undefined}, Got),
    ?assertEqual(<<"hello">>, value(Got)),
    %% Metadata is riakc's dict, with riak_pb_kv_codec's keys and forms.
    MD = metadata(Got),
    {ok, VTag} = dict:find(<<"X-Riak-VTag">>, MD),
    ?assert(is_list(VTag)),
    ?assertMatch({ok, {_, _, _}}, dict:find(<<"X-Riak-Last-Modified">>, MD)),
    %% put/2 with return_body answers the stored object.
    Updated = Got#riakc_obj{updatevalue = <<"again">>},
    {ok, Returned} = mongoose_riak:put(Updated, [return_body]),
    ?assertEqual(<<"again">>, value(Returned)),
    ?assertNotEqual(Got#riakc_obj.vclock, Returned#riakc_obj.vclock),
    %% A key the server makes up.
    {ok, NewKey} = mongoose_riak:put(new_obj(<<"bucket">>, undefined, <<"anon">>)),
    ?assertMatch({ok, #riakc_obj{key = NewKey}}, mongoose_riak:get(<<"bucket">>, NewKey)),
    %% A value that is not a binary goes as an Erlang term, as riakc sends it.
    ok = mongoose_riak:put(new_obj(<<"bucket">>, <<"term">>, {a, [1, 2]})),
    {ok, Term} = mongoose_riak:get(<<"bucket">>, <<"term">>, 2000),
    ?assertEqual({a, [1, 2]}, binary_to_term(value(Term))),
    ?assertEqual({ok, "application/x-erlang-binary"},
                 dict:find(<<"content-type">>, metadata(Term))),
    ?assertEqual(ok, mongoose_riak:delete(<<"bucket">>, <<"k1">>)),
    ?assertEqual({error, notfound}, mongoose_riak:get(<<"bucket">>, <<"k1">>)),
    ?assertEqual(ok, mongoose_riak:delete(<<"bucket">>, <<"k1">>, [{w, quorum}])).

notfound_and_options(Config) ->
    {ok, _} = start_pool(Config),
    ?assertEqual({error, notfound}, mongoose_riak:get(<<"b">>, <<"nope">>)),
    ?assertEqual({error, notfound}, mongoose_riak:get({<<"typed">>, <<"b">>}, <<"nope">>, [{r, one}])),
    ok = mongoose_riak:put(new_obj(<<"b">>, <<"k">>, <<"v">>), [{w, all}, {dw, default}]),
    {ok, Obj} = mongoose_riak:get(<<"b">>, <<"k">>, [{r, quorum}, {pr, 1}, {notfound_ok, true}]),
    ?assertEqual(unchanged, mongoose_riak:get(<<"b">>, <<"k">>, [{if_modified, Obj#riakc_obj.vclock}])),
    {ok, Head} = mongoose_riak:get(<<"b">>, <<"k">>, [head]),
    ?assertEqual(<<>>, value(Head)),
    %% if_none_match on an existing key: the server's error, as riakc gives it.
    ?assertEqual({error, <<"match_found">>},
                 mongoose_riak:put(new_obj(<<"b">>, <<"k">>, <<"w">>), [if_none_match])).

siblings_on_a_stale_vclock(Config) ->
    {ok, _} = start_pool(Config),
    B = {<<"sibs">>, <<"chat">>},
    ok = mongoose_riak:put(new_obj(B, <<"k">>, <<"one">>)),
    {ok, First} = mongoose_riak:get(B, <<"k">>),
    %% Two writers start from the same version.
    ok = mongoose_riak:put(First#riakc_obj{updatevalue = <<"two">>}),
    ok = mongoose_riak:put(First#riakc_obj{updatevalue = <<"three">>}),
    {ok, Both} = mongoose_riak:get(B, <<"k">>),
    ?assertEqual([<<"three">>, <<"two">>],
                 lists:sort([V || {_, V} <- Both#riakc_obj.contents])),
    %% riakc's put throws siblings for an object it cannot pick one from.
    ?assertThrow(siblings, mongoose_riak:put(Both)),
    %% Writing with the vclock that saw both resolves them.
    [{MD, _} | _] = Both#riakc_obj.contents,
    ok = mongoose_riak:put(Both#riakc_obj{updatemetadata = MD, updatevalue = <<"merged">>}),
    {ok, Merged} = mongoose_riak:get(B, <<"k">>),
    ?assertEqual(<<"merged">>, value(Merged)),
    %% The default bucket type keeps the last write, as Riak 2.x does.
    ok = mongoose_riak:put(new_obj(<<"plain">>, <<"k">>, <<"one">>)),
    ok = mongoose_riak:put(new_obj(<<"plain">>, <<"k">>, <<"two">>)),
    {ok, Plain} = mongoose_riak:get(<<"plain">>, <<"k">>),
    ?assertEqual(<<"two">>, value(Plain)).

%% The objects mod_last_riak and mod_offline_riak store and read back:
%% secondary indexes and user metadata set on riakc's metadata dict.
objects_as_mongooseim_writes_them(Config) ->
    {ok, _} = start_pool(Config),
    B = {<<"offline">>, <<"localhost">>},
    MD0 = dict:new(),
    Indexes = [{<<"timestamp_int">>, [<<"1700000000">>]}, {<<"user_bin">>, [<<"alice">>]}],
    MD1 = lists:foldl(fun({Name, Vs}, Acc) ->
                              dict:append_list(<<"index">>, [{Name, V} || V <- Vs], Acc)
                      end, MD0, Indexes),
    MD2 = dict:store(<<"X-Riak-Meta">>, [{<<"from">>, <<"bob@localhost">>}], MD1),
    MD = dict:store(<<"content-type">>, "application/xml", MD2),
    Obj = (new_obj(B, <<"alice@1">>, <<"<message/>">>))#riakc_obj{updatemetadata = MD},
    ok = mongoose_riak:put(Obj),
    {ok, Got} = mongoose_riak:get(B, <<"alice@1">>),
    GotMD = metadata(Got),
    ?assertEqual({ok, [{<<"timestamp_int">>, <<"1700000000">>}, {<<"user_bin">>, <<"alice">>}]},
                 dict:find(<<"index">>, GotMD)),
    ?assertEqual({ok, [{<<"from">>, <<"bob@localhost">>}]}, dict:find(<<"X-Riak-Meta">>, GotMD)),
    ?assertEqual({ok, "application/xml"}, dict:find(<<"content-type">>, GotMD)),
    ?assertEqual(<<"<message/>">>, value(Got)),
    %% mod_offline_riak's read_user_idx/remove_expired_messages.
    {ok, #index_results_v1{keys = [<<"alice@1">>]}} =
        mongoose_riak:get_index(B, {binary_index, "user"}, <<"alice">>, [{max_results, 10}]),
    {ok, #index_results_v1{keys = [<<"alice@1">>]}} =
        mongoose_riak:get_index_range(B, {integer_index, "timestamp"}, 0, 1800000000, []).

%% ejabberd_auth_riak's calls: create_new_map, update_type with the map's
%% op, fetch_type, update_map on what came back.
map_update_and_fetch_round_trip(Config) ->
    {ok, _} = start_pool(Config),
    B = {<<"users">>, <<"localhost">>},
    ?assertEqual({error, {notfound, map}}, mongoose_riak:fetch_type(B, <<"alice">>)),
    New = mongoose_riak:create_new_map([{{<<"created">>, register}, set_register(<<"1700">>)},
                                        {{<<"password">>, register}, set_register(<<"s3">>)},
                                        {{<<"logins">>, counter},
                                         fun(C) -> C#counter{increment = 2} end},
                                        {{<<"roles">>, set},
                                         fun(S) -> S#set{adds = [<<"admin">>]} end},
                                        {{<<"active">>, flag}, fun(F) -> F#flag{op = enable} end}]),
    ?assertMatch(#map{value = [], context = undefined}, New),
    ?assertEqual(ok, mongoose_riak:update_type(B, <<"alice">>, map_to_op(New))),
    {ok, Fetched} = mongoose_riak:fetch_type(B, <<"alice">>),
    #map{value = Value, context = Ctx} = Fetched,
    ?assert(is_binary(Ctx)),
    ?assertEqual([{{<<"active">>, flag}, true},
                  {{<<"created">>, register}, <<"1700">>},
                  {{<<"logins">>, counter}, 2},
                  {{<<"password">>, register}, <<"s3">>},
                  {{<<"roles">>, set}, [<<"admin">>]}], Value),
    %% do_set_password: update_map on the fetched map, then update_type.
    Changed = mongoose_riak:update_map(Fetched, [{{<<"password">>, register}, set_register(<<"new">>)},
                                                 {{<<"logins">>, counter},
                                                  fun(#counter{value = 2} = C) ->
                                                          C#counter{increment = 1}
                                                  end}]),
    {ok, #map{value = After}} =
        mongoose_riak:update_type(B, <<"alice">>, map_to_op(Changed), [return_body]),
    ?assertEqual({ok, <<"new">>}, orddict:find({<<"password">>, register}, After)),
    ?assertEqual({ok, 3}, orddict:find({<<"logins">>, counter}, After)),
    %% Removing a field and nesting maps.
    Nested = mongoose_riak:update_map(
               #map{context = Ctx},
               [{{<<"prefs">>, map},
                 fun(M) -> mongoose_riak:update_map(M, [{{<<"lang">>, register}, set_register(<<"pl">>)}]) end}]),
    {map, {update, Ops}, Ctx} = map_to_op(Nested),
    ok = mongoose_riak:update_type(B, <<"alice">>, {map, {update, [{remove, {<<"active">>, flag}} | Ops]}, Ctx}),
    {ok, #map{value = Last}} = mongoose_riak:fetch_type(B, <<"alice">>, [{r, quorum}, include_context]),
    ?assertEqual(error, orddict:find({<<"active">>, flag}, Last)),
    ?assertEqual({ok, [{{<<"lang">>, register}, <<"pl">>}]}, orddict:find({<<"prefs">>, map}, Last)),
    ?assertEqual({error, unmodified}, mongoose_riak:update_type(B, <<"alice">>, undefined)),
    %% A key the server makes up.
    {ok, Key} = mongoose_riak:update_type(B, undefined, map_to_op(New)),
    ?assertMatch({ok, #map{}}, mongoose_riak:fetch_type(B, Key)),
    {ok, Key2, #map{value = [_ | _]}} =
        mongoose_riak:update_type(B, undefined, map_to_op(New), [return_body]),
    ?assert(is_binary(Key2)).

sets_and_counters(Config) ->
    {ok, _} = start_pool(Config),
    Sets = {<<"sets">>, <<"rooms">>},
    ok = mongoose_riak:update_type(Sets, <<"r1">>, {set, {add_all, [<<"a">>, <<"b">>]}, undefined}),
    {ok, #set{value = [<<"a">>, <<"b">>], context = Ctx}} = mongoose_riak:fetch_type(Sets, <<"r1">>),
    ok = mongoose_riak:update_type(Sets, <<"r1">>,
                                   {set, {update, [{remove_all, [<<"a">>]}, {add_all, [<<"c">>]}]}, Ctx}),
    ?assertMatch({ok, #set{value = [<<"b">>, <<"c">>]}}, mongoose_riak:fetch_type(Sets, <<"r1">>)),
    %% Removing what is not there: Riak's precondition error.
    {error, Msg} = mongoose_riak:update_type(Sets, <<"r1">>, {set, {remove_all, [<<"zz">>]}, Ctx}),
    ?assertNotEqual(nomatch, binary:match(Msg, <<"precondition">>)),
    Counters = {<<"counters">>, <<"hits">>},
    ok = mongoose_riak:update_type(Counters, <<"c">>, {counter, {increment, 5}, undefined}),
    {ok, #counter{value = 3}} =
        mongoose_riak:update_type(Counters, <<"c">>, {counter, {increment, -2}, undefined}, [return_body]),
    ?assertEqual({ok, #counter{value = 3}}, mongoose_riak:fetch_type(Counters, <<"c">>)),
    %% A bucket type without a data type: the server's error.
    {error, NoType} = mongoose_riak:fetch_type({<<"default">>, <<"b">>}, <<"c">>),
    ?assertNotEqual(nomatch, binary:match(NoType, <<"not a supported type">>)),
    %% The wrong operation for the bucket type.
    ?assertMatch({error, <<"Operation type is", _/binary>>},
                 mongoose_riak:update_type(Counters, <<"c">>, {set, {add_all, [<<"x">>]}, undefined})).

list_keys_is_streamed(Config) ->
    {ok, _} = start_pool(Config),
    B = {<<"typed">>, <<"many">>},
    Keys = [integer_to_binary(I) || I <- lists:seq(1, 25)],
    [ok = mongoose_riak:put(new_obj(B, K, <<"v">>)) || K <- Keys],
    %% The server sends two keys a message: 13 messages and a done.
    {ok, Listed} = mongoose_riak:list_keys(B),
    ?assertEqual(lists:sort(Keys), lists:sort(Listed)),
    ?assertEqual({ok, []}, mongoose_riak:list_keys(<<"empty">>)),
    %% Each worker's connection stays in step after a streamed answer.
    ?assertMatch({ok, _}, mongoose_riak:get(B, <<"7">>)).

list_buckets(Config) ->
    {ok, _} = start_pool(Config),
    [ok = mongoose_riak:put(new_obj({<<"lb">>, N}, <<"k">>, <<"v">>))
     || N <- [<<"b1">>, <<"b2">>, <<"b3">>]],
    ?assertEqual({ok, [<<"b1">>, <<"b2">>, <<"b3">>]}, mongoose_riak:list_buckets(<<"lb">>)).

index_exact_and_range(Config) ->
    {ok, _} = start_pool(Config),
    B = {<<"typed">>, <<"idx">>},
    Put = fun(K, Ts, User) ->
                  MD = dict:store(<<"index">>, [{<<"ts_int">>, Ts}, {<<"user_bin">>, User}], dict:new()),
                  ok = mongoose_riak:put((new_obj(B, K, <<"v">>))#riakc_obj{updatemetadata = MD})
          end,
    Put(<<"a">>, 10, <<"alice">>),
    Put(<<"b">>, 20, <<"bob">>),
    Put(<<"c">>, 30, <<"alice">>),
    ?assertEqual({ok, #index_results_v1{keys = [<<"a">>, <<"c">>]}},
                 mongoose_riak:get_index(B, {binary_index, "user"}, <<"alice">>, [])),
    ?assertEqual({ok, #index_results_v1{keys = [<<"b">>]}},
                 mongoose_riak:get_index(B, {integer_index, "ts"}, 20, [])),
    ?assertEqual({ok, #index_results_v1{keys = [<<"a">>, <<"b">>]}},
                 mongoose_riak:get_index_range(B, {integer_index, "ts"}, 5, 25, [])),
    ?assertEqual({ok, #index_results_v1{terms = [{<<"20">>, <<"b">>}, {<<"30">>, <<"c">>}]}},
                 mongoose_riak:get_index_range(B, <<"ts_int">>, <<"15">>, <<"99">>,
                                               [{return_terms, true}])),
    %% Keys in the order of their terms, as Riak answers a range.
    ?assertEqual({ok, #index_results_v1{keys = [<<"a">>, <<"c">>, <<"b">>]}},
                 mongoose_riak:get_index_range(B, {binary_index, "user"}, "a", "bz", [])),
    ?assertEqual({ok, #index_results_v1{keys = []}},
                 mongoose_riak:get_index_range(B, {integer_index, "ts"}, 100, 200, [])),
    %% Riak's own $bucket index, as mod_last_riak counts with it.
    ?assertEqual({ok, #index_results_v1{keys = [<<"a">>, <<"b">>, <<"c">>]}},
                 mongoose_riak:get_index(B, <<"$bucket">>, <<"idx">>, [])).

index_pages(Config) ->
    {ok, _} = start_pool(Config),
    B = {<<"typed">>, <<"pages">>},
    [ok = mongoose_riak:put((new_obj(B, K, <<"v">>))#riakc_obj{
                              updatemetadata = dict:store(<<"index">>, [{<<"n_int">>, 1}], dict:new())})
     || K <- [<<"k1">>, <<"k2">>, <<"k3">>]],
    {ok, #index_results_v1{keys = [<<"k1">>, <<"k2">>], continuation = Cont}} =
        mongoose_riak:get_index(B, {integer_index, "n"}, 1, [{max_results, 2}]),
    ?assert(is_binary(Cont)),
    ?assertEqual({ok, #index_results_v1{keys = [<<"k3">>]}},
                 mongoose_riak:get_index(B, {integer_index, "n"}, 1,
                                         [{max_results, 2}, {continuation, Cont}])),
    ?assertMatch({error, {bad_request, _}},
                 mongoose_riak:get_index(B, {integer_index, "n"}, 1, [{stream, true}])).

search_on_an_index(Config) ->
    {ok, _} = start_pool(Config),
    B = {<<"search_type">>, <<"archive">>},
    Put = fun(K, Json) ->
                  MD = dict:store(<<"content-type">>, "application/json", dict:new()),
                  ok = mongoose_riak:put((new_obj(B, K, Json))#riakc_obj{updatemetadata = MD})
          end,
    Put(<<"m1">>, <<"{\"body\": \"hello world\", \"from\": \"alice\"}">>),
    Put(<<"m2">>, <<"{\"body\": \"goodbye\", \"from\": \"bob\"}">>),
    Put(<<"m3">>, <<"{\"body\": \"hello again\", \"from\": \"bob\"}">>),
    {ok, #search_results{docs = Docs, num_found = 2, max_score = Score}} =
        mongoose_riak:search(<<"messages">>, <<"body:hello*">>),
    ?assert(is_float(Score)),
    ?assertEqual([<<"m1">>, <<"m3">>],
                 lists:sort([proplists:get_value(<<"_yz_rk">>, Fields) || {<<"messages">>, Fields} <- Docs])),
    {ok, #search_results{docs = [{<<"messages">>, Only}], num_found = 1}} =
        mongoose_riak:search(<<"messages">>, <<"body:hello* AND from:bob">>,
                             [{fl, [<<"_yz_rk">>]}, {rows, 5}]),
    ?assertEqual([{<<"_yz_rk">>, <<"m3">>}], Only),
    {ok, #search_results{docs = [{_, Sorted}], num_found = 3}} =
        mongoose_riak:search(<<"messages">>, <<"*:*">>,
                             [{sort, <<"from desc">>}, {rows, 1}, {start, 0}, {fl, [<<"from">>]}]),
    ?assertEqual([{<<"from">>, <<"bob">>}], Sorted),
    ?assertMatch({error, <<"No index", _/binary>>}, mongoose_riak:search(<<"nope">>, <<"*:*">>)).

%% mod_last_riak's count_active_users: a mapreduce over a $bucket index
%% with reduce_count_inputs.
mapred_counts_and_values(Config) ->
    {ok, _} = start_pool(Config),
    B = {<<"last">>, <<"localhost">>},
    [ok = mongoose_riak:put(new_obj(B, K, <<"status ", K/binary>>)) || K <- [<<"u1">>, <<"u2">>, <<"u3">>]],
    Idx = {index, B, <<"$bucket">>, <<"localhost">>},
    Red = [{reduce, {modfun, riak_kv_mapreduce, reduce_count_inputs},
            [{reduce_phase_batch_size, 1000}], true}],
    ?assertEqual({ok, [{0, [3]}]}, mongoose_riak:mapred(Idx, Red)),
    Map = [{map, {modfun, riak_kv_mapreduce, map_object_value}, none, true}],
    {ok, [{0, Values}]} = mongoose_riak:mapred([{B, <<"u1">>}, {B, <<"u3">>}], Map),
    ?assertEqual([<<"status u1">>, <<"status u3">>], lists:sort(Values)),
    ?assertEqual({ok, []}, mongoose_riak:mapred(B, [{map, {modfun, riak_kv_mapreduce, map_object_value},
                                                    none, false}])),
    ?assertMatch({error, <<"phase 0:", _/binary>>},
                 mongoose_riak:mapred(B, [{map, {jsfun, <<"Riak.mapValues">>}, none, true}])).

%%--------------------------------------------------------------------
%% Failures
%%--------------------------------------------------------------------

server_errors(Config) ->
    {ok, _} = start_pool(port_of(Config), [{workers, 1}], #{}),
    Server = ?config(server, Config),
    control(Server, "error 1 overload"),
    ?assertEqual({error, <<"overload">>}, mongoose_riak:get(<<"b">>, <<"k">>)),
    control(Server, "error 1 busy"),
    ?assertEqual({error, <<"busy">>}, mongoose_riak:list_keys(<<"b">>)),
    %% The connection is still in step.
    ?assertEqual({error, notfound}, mongoose_riak:get(<<"b">>, <<"k">>)).

dropped_connection_then_recovery(Config) ->
    {ok, _} = start_pool(port_of(Config), [{workers, 1}], #{}),
    control(?config(server, Config), "drop 1"),
    {error, {connection_lost, Msg}} = mongoose_riak:get(<<"b">>, <<"k">>),
    ?assertNotEqual(nomatch, binary:match(Msg, <<"riak 127.0.0.1:">>)),
    ok = wait_for(fun() -> mongoose_riak:get(<<"b">>, <<"k">>) =:= {error, notfound} end, 50).

idle_connection_closed_is_replaced(Config) ->
    {ok, _} = start_pool(port_of(Config), [{workers, 2}], #{}),
    ?assertEqual({error, notfound}, mongoose_riak:get(<<"b">>, <<"k">>)),
    Server = ?config(server, Config),
    Before = accepted(Server),
    control(Server, "close_all"),
    %% The pool notices without a request and reopens both connections.
    ok = wait_for(fun() -> accepted(Server) >= Before + 2 andalso connected(2) end, 50),
    [?assertEqual({error, notfound}, mongoose_riak:get(<<"b">>, <<"k">>)) || _ <- lists:seq(1, 4)].

connected(N) ->
    Stats = mongoose_wpool:stats(riak, global, default),
    Workers = proplists:get_value(workers, Stats),
    N =:= length([W || {_, W} <- Workers, proplists:get_value(connected, W)]).

wait_for(_F, 0) -> timeout;
wait_for(F, N) ->
    case F() of
        true -> ok;
        false -> timer:sleep(100), wait_for(F, N - 1)
    end.

stall_answered_within_call_timeout(Config) ->
    {ok, _} = start_pool(port_of(Config), [{call_timeout, 500}, {workers, 1}], #{}),
    control(?config(server, Config), "stall 1 3000"),
    T0 = erlang:monotonic_time(millisecond),
    ?assertEqual({error, timeout}, mongoose_riak:get(<<"b">>, <<"k">>)),
    Took = erlang:monotonic_time(millisecond) - T0,
    ct:log("answered after ~p ms", [Took]),
    ?assert(Took >= 450 andalso Took < 1000),
    %% No late answer reaches the caller; the worker gives the stalled
    %% connection up and opens another.
    receive Late -> ct:fail({late_message, Late}) after 300 -> ok end,
    ok = wait_for(fun() -> mongoose_riak:get(<<"b">>, <<"k">>) =:= {error, notfound} end, 50),
    %% The Timeout argument of riakc's calls bounds a call too.
    control(?config(server, Config), "stall 1 3000"),
    ?assertEqual({error, timeout}, mongoose_riak:get(<<"b">>, <<"k">>, 200)).

bad_requests_are_refused(Config) ->
    {ok, _} = start_pool(Config),
    Bad = fun(R) -> ?assertMatch({error, {bad_request, _}}, R), element(2, element(2, R)) end,
    ?assertEqual(<<"the bucket must not be empty">>, Bad(mongoose_riak:get(<<>>, <<"k">>))),
    Bad(mongoose_riak:get(<<"b">>, 42)),
    ?assertEqual(<<"unknown option nope">>, Bad(mongoose_riak:get(<<"b">>, <<"k">>, [{nope, 1}]))),
    Bad(mongoose_riak:put(not_an_object)),
    Bad(mongoose_riak:fetch_type(<<"untyped">>, <<"k">>)),
    Bad(mongoose_riak:update_type({<<"maps">>, <<"b">>}, <<"k">>, {flag, enable, undefined})),
    Bad(mongoose_riak:update_type({<<"maps">>, <<"b">>}, <<"k">>, {map, {update, [bogus]}, undefined})),
    Bad(mongoose_wpool:call(riak, global, default, {drop_everything})),
    ?assertEqual({error, notfound}, mongoose_riak:get(<<"b">>, <<"k">>)).

server_down(_Config) ->
    Private = start_server([]),
    #{port := Port} = Private,
    {ok, _} = start_pool(Port, [{workers, 1}], #{}),
    ?assertEqual({error, notfound}, mongoose_riak:get(<<"b">>, <<"k">>)),
    stop_server(Private),
    ok = wait_for(fun() -> not connected(1) end, 50),
    ?assertMatch({error, {no_connection, _}}, mongoose_riak:get(<<"b">>, <<"k">>)),
    mongoose_wpool:stop(),
    {error, {connect_failed, Msg}} = start_pool(Port, [], #{}),
    ct:log("~s", [Msg]),
    ?assertMatch(<<"riak 127.0.0.1:", _/binary>>, Msg),
    ?assertEqual({error, {pool_not_started, {riak, global, default}}},
                 mongoose_riak:get(<<"b">>, <<"k">>)).

config_errors(Config) ->
    Err = fun(Conn) ->
                  {error, {invalid_config, Msg}} =
                      mongoose_wpool:start(riak, global, default, [], Conn),
                  Msg
          end,
    ?assertEqual(<<"outgoing_pools.riak.default.connection.port: expected an integer "
                   "between 1 and 65535, got 0">>, Err(#{port => 0})),
    ?assertMatch(<<"outgoing_pools.riak.default.connection.host: unknown option", _/binary>>,
                 Err(#{host => "x"})),
    ?assertMatch(<<"outgoing_pools.riak.default.connection.address: expected a string", _/binary>>,
                 Err(#{address => 127})),
    NoCa = Err(#{credentials => #{user => <<"u">>, password => <<"canary-s3cret">>}}),
    ?assertMatch(<<"outgoing_pools.riak.default.connection.tls.cacertfile: required", _/binary>>, NoCa),
    ?assertEqual(nomatch, binary:match(NoCa, <<"canary">>)),
    NoUser = Err(#{credentials => #{password => <<"canary-s3cret">>}}),
    ?assertMatch(<<"outgoing_pools.riak.default.connection.credentials.user: required", _/binary>>,
                 NoUser),
    ?assertEqual(nomatch, binary:match(NoUser, <<"canary">>)),
    ?assertMatch(<<"outgoing_pools.riak.default.connection.tls: Riak uses TLS only", _/binary>>,
                 Err(#{tls => #{cacertfile => "/nonexistent"}})),
    ?assertMatch(<<"outgoing_pools.riak.default.connection.tls.cacertfile: ", _/binary>>,
                 Err(#{credentials => #{user => <<"u">>, password => <<"p">>},
                       tls => #{cacertfile => "/nonexistent/ca.pem"}})),
    %% Seed 000's legacy tuple, with its address and port.
    Legacy = {riak, global, default, [{strategy, next_worker}],
              [{address, "127.0.0.1"}, {port, port_of(Config)}]},
    [{ok, _}] = mongoose_wpool:start_configured_pools([Legacy], []),
    ?assertEqual({error, notfound}, mongoose_riak:get(<<"b">>, <<"k">>)),
    mongoose_wpool:stop(),
    LegacyCreds = {riak, global, default, [],
                   [{address, "127.0.0.1"}, {credentials, "u", "canary-s3cret"}]},
    [{error, {invalid_config, LegacyMsg}}] = mongoose_wpool:start_configured_pools([LegacyCreds], []),
    ?assertMatch(<<"outgoing_pools.riak.default.connection.tls.cacertfile: required", _/binary>>,
                 LegacyMsg),
    ?assertEqual(nomatch, binary:match(LegacyMsg, <<"canary">>)).

available_worker_is_refused(Config) ->
    ?assertError({strategy_not_supported, riak, global, default, available_worker},
                 start_pool(port_of(Config), [{strategy, available_worker}], #{})),
    ?assertNot(mongoose_wpool:is_supported_strategy(riak, available_worker)),
    [begin
         {ok, _} = start_pool(port_of(Config), [{strategy, S}], #{}),
         mongoose_wpool:stop()
     end || S <- [best_worker, random_worker, next_worker, next_available_worker]],
    ok.

callback_module(Config) ->
    ok = mongoose_wpool_riak:init(),
    ?assertNot(mongoose_wpool_riak:is_supported_strategy(available_worker)),
    ?assert(mongoose_wpool_riak:is_supported_strategy(best_worker)),
    {ok, _} = mongoose_wpool_riak:start(global, default, [{workers, 1}],
                                        #{address => "127.0.0.1", port => port_of(Config)}),
    ?assertEqual({error, notfound}, mongoose_riak:get(<<"b">>, <<"k">>)),
    ok = mongoose_wpool_riak:stop(global, default),
    ?assertMatch({error, {pool_not_started, _}}, mongoose_riak:get(<<"b">>, <<"k">>)).

%%--------------------------------------------------------------------
%% STARTTLS and authentication
%%--------------------------------------------------------------------

secure_server(Config) ->
    Certs = ?config(certs, Config),
    start_server(["--certfile", maps:get(server, Certs),
                  "--keyfile", maps:get(server_key, Certs),
                  "--user", "riakuser", "--password", "canary-s3cret"]).

credentials_start_tls_and_authenticate(Config) ->
    Server = secure_server(Config),
    try
        Certs = ?config(certs, Config),
        {ok, _} = start_pool(maps:get(port, Server), [{workers, 2}],
                             #{credentials => #{user => <<"riakuser">>, password => <<"canary-s3cret">>},
                               tls => #{cacertfile => maps:get(ca, Certs)}}),
        ok = mongoose_riak:put(new_obj(<<"b">>, <<"k">>, <<"secret value">>)),
        {ok, Obj} = mongoose_riak:get(<<"b">>, <<"k">>),
        ?assertEqual(<<"secret value">>, value(Obj)),
        ?assertEqual({ok, [<<"k">>]}, mongoose_riak:list_keys(<<"b">>)),
        %% Seed 000's legacy form of the same.
        mongoose_wpool:stop(),
        Legacy = {riak, global, default, [],
                  [{address, "localhost"}, {port, maps:get(port, Server)},
                   {credentials, "riakuser", "canary-s3cret"},
                   {cacertfile, maps:get(ca, Certs)}]},
        [{ok, _}] = mongoose_wpool:start_configured_pools([Legacy], []),
        ?assertMatch({ok, _}, mongoose_riak:get(<<"b">>, <<"k">>))
    after
        stop_server(Server)
    end.

wrong_password_fails_the_start(Config) ->
    Server = secure_server(Config),
    try
        Certs = ?config(certs, Config),
        {error, {connect_failed, Msg}} =
            start_pool(maps:get(port, Server), [],
                       #{credentials => #{user => <<"riakuser">>, password => <<"wrong-canary">>},
                         tls => #{cacertfile => maps:get(ca, Certs)}}),
        ct:log("~s", [Msg]),
        ?assertNotEqual(nomatch, binary:match(Msg, <<"refused connection.credentials">>)),
        ?assertEqual(nomatch, binary:match(Msg, <<"canary">>)),
        %% Without credentials the server refuses requests before STARTTLS.
        {ok, _} = start_pool(maps:get(port, Server), [{workers, 1}], #{}),
        ?assertEqual({error, <<"Security is enabled, please STARTTLS first">>},
                     mongoose_riak:get(<<"b">>, <<"k">>))
    after
        stop_server(Server)
    end.

wrong_ca_fails_the_start(Config) ->
    Server = secure_server(Config),
    try
        Certs = ?config(certs, Config),
        {error, {connect_failed, Msg}} =
            start_pool(maps:get(port, Server), [],
                       #{credentials => #{user => <<"riakuser">>, password => <<"canary-s3cret">>},
                         tls => #{cacertfile => maps:get(other_ca, Certs)}}),
        ct:log("~s", [Msg]),
        ?assertNotEqual(nomatch, binary:match(Msg, <<"TLS handshake">>))
    after
        stop_server(Server)
    end.

server_without_security(Config) ->
    Server = start_server([]),
    try
        Certs = ?config(certs, Config),
        {error, {connect_failed, Msg}} =
            start_pool(maps:get(port, Server), [],
                       #{credentials => #{user => <<"u">>, password => <<"p">>},
                         tls => #{cacertfile => maps:get(ca, Certs)}}),
        ?assertNotEqual(nomatch, binary:match(Msg, <<"refused STARTTLS">>))
    after
        stop_server(Server)
    end.
