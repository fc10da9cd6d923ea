%% The elastic pool type and mongoose_elasticsearch, through the NIF, against
%% test/servers/es_server.py: no Elasticsearch can run here, so a test server
%% written from Elasticsearch's REST reference stands in, presenting itself
%% as 8.x, 6.x or OpenSearch. The official Python client (elasticsearch 8.x,
%% in the virtualenv scripts/setup.sh makes) checks that server in
%% independent_client_passes.
-module(elastic_SUITE).
-compile([export_all, nowarn_export_all]).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-define(IDX, <<"mn_messages">>).

all() ->
    [{group, es8}, {group, es6}, {group, opensearch}, {group, failures}].

groups() ->
    Api = [health_answers_the_cluster_map, stats_show_the_version_and_paths,
           insert_search_count_delete, server_errors_carry_status_and_body],
    [{es8, [], [independent_client_passes | Api]},
     {es6, [], Api},
     {opensearch, [], Api},
     {failures, [], [malformed_json_is_an_error, dropped_connection_then_recovery,
                     stall_times_out_within_call_timeout, bad_requests_are_refused,
                     server_down, not_elasticsearch_fails_the_start, basic_auth,
                     config_errors, callback_module]}].

init_per_suite(Config) ->
    ok = mongoose_wpool:ensure_started(),
    ok = case inets:start() of
             ok -> ok;
             {error, {already_started, inets}} -> ok
         end,
    mn_test_venv:python(),
    Config.

end_per_suite(_Config) -> ok.

init_per_group(Group, Config) ->
    Args = case Group of
               es6 -> ["--version", "6.8.23"];
               opensearch -> ["--version", "2.11.0", "--distribution", "opensearch"];
               _ -> ["--version", "8.15.0"]
           end,
    [{server, start_server(Args)}, {group, Group} | Config].

end_per_group(_, Config) ->
    stop_server(?config(server, Config)).

init_per_testcase(_, Config) ->
    {ok, _} = start_pool(port_of(Config), [], #{}),
    Config.

end_per_testcase(_, _Config) ->
    mongoose_wpool:stop(),
    ok.

%%--------------------------------------------------------------------
%% Helpers
%%--------------------------------------------------------------------

start_server(Args) ->
    mn_test_venv:start_server("es_server.py", ["--port", "0" | Args], [port]).

stop_server(Server) ->
    mn_test_venv:stop_server(Server).

port_of(Config) -> maps:get(port, ?config(server, Config)).

start_pool(Port, PoolOpts, ConnOpts) ->
    mongoose_wpool:start(elastic, global, default, PoolOpts,
                         ConnOpts#{host => "127.0.0.1", port => Port}).

%% Makes the next Count requests fail as Fault (a JSON object) says.
fault(Config, Json) ->
    Url = "http://127.0.0.1:" ++ integer_to_list(port_of(Config)) ++ "/_mn_test/fault",
    {ok, {{_, 200, _}, _, _}} = httpc:request(post, {Url, [], "application/json", Json}, [], []),
    ok.

typed(Config) -> ?config(group, Config) =:= es6.

%%--------------------------------------------------------------------
%% The API against each version
%%--------------------------------------------------------------------

health_answers_the_cluster_map(_Config) ->
    {ok, Health} = mongoose_elasticsearch:health(),
    ?assertMatch(#{<<"cluster_name">> := <<"mongoose_native_test">>,
                   <<"status">> := S, <<"timed_out">> := false,
                   <<"number_of_nodes">> := 1} when S =:= <<"green">>; S =:= <<"yellow">>, Health).

stats_show_the_version_and_paths(Config) ->
    Stats = mongoose_wpool:stats(elastic, global, default),
    Expected = case ?config(group, Config) of
                   es8 -> [{distribution, elasticsearch}, {version, <<"8.15.0">>}, {paths, typeless}];
                   es6 -> [{distribution, elasticsearch}, {version, <<"6.8.23">>}, {paths, typed}];
                   opensearch -> [{distribution, opensearch}, {version, <<"2.11.0">>}, {paths, typeless}]
               end,
    ?assertEqual(Expected, proplists:get_value(server, Stats)),
    ?assertEqual(10, proplists:get_value(size, Stats)).

insert_search_count_delete(Config) ->
    Docs = [{<<"1">>, #{<<"user">> => <<"alice">>, <<"body">> => <<"Hello world">>, n => 1,
                        <<"tags">> => [<<"a">>, <<"b">>], <<"seen">> => null}},
            {<<"2">>, #{<<"user">> => <<"bob">>, <<"body">> => <<"hello again">>, n => 2}},
            {<<"3">>, #{<<"user">> => <<"alice">>, <<"body">> => <<"goodbye">>, n => 3}}],
    [begin
         {ok, Answer} = mongoose_elasticsearch:insert_document(?IDX, <<"message">>, Id, Doc),
         ?assertMatch(#{<<"_id">> := Id, <<"result">> := <<"created">>,
                        <<"_index">> := ?IDX}, Answer),
         %% MongooseIM's type reaches a 6.x server; 8.x has no types.
         case typed(Config) of
             true -> ?assertMatch(#{<<"_type">> := <<"message">>}, Answer);
             false -> ?assertNot(maps:is_key(<<"_type">>, Answer))
         end
     end || {Id, Doc} <- Docs],
    {ok, Again} = mongoose_elasticsearch:insert_document(?IDX, <<"message">>, <<"1">>,
                                                         element(2, hd(Docs))),
    ?assertMatch(#{<<"result">> := <<"updated">>, <<"_version">> := 2}, Again),

    {ok, Found} = mongoose_elasticsearch:search(?IDX, <<"message">>,
                                                #{query => #{match => #{body => <<"hello">>}}}),
    #{<<"hits">> := #{<<"total">> := Total, <<"hits">> := Hits}} = Found,
    case ?config(group, Config) of
        es6 -> ?assertEqual(2, Total);
        _ -> ?assertEqual(#{<<"value">> => 2, <<"relation">> => <<"eq">>}, Total)
    end,
    ?assertEqual([<<"1">>, <<"2">>], lists:sort([maps:get(<<"_id">>, H) || H <- Hits])),
    [Alice1] = [S || #{<<"_id">> := <<"1">>, <<"_source">> := S} <- Hits],
    ?assertEqual(#{<<"user">> => <<"alice">>, <<"body">> => <<"Hello world">>, <<"n">> => 1,
                   <<"tags">> => [<<"a">>, <<"b">>], <<"seen">> => null}, Alice1),

    Bool = #{query => #{bool => #{must => [#{term => #{user => <<"alice">>}}],
                                  filter => [#{range => #{n => #{gte => 2}}}]}},
             sort => [#{n => <<"desc">>}]},
    {ok, #{<<"hits">> := #{<<"hits">> := [#{<<"_id">> := <<"3">>}]}}} =
        mongoose_elasticsearch:search(?IDX, <<"message">>, Bool),
    %% A request body given as JSON text goes as it is.
    {ok, #{<<"hits">> := #{<<"hits">> := Sorted}}} =
        mongoose_elasticsearch:search(?IDX, <<"message">>,
                                      <<"{\"query\":{\"match_all\":{}},\"sort\":[{\"n\":\"desc\"}],\"size\":2}">>),
    ?assertEqual([<<"3">>, <<"2">>], [maps:get(<<"_id">>, H) || H <- Sorted]),

    ?assertEqual({ok, 3}, mongoose_elasticsearch:count(?IDX, <<"message">>, #{})),
    ?assertEqual({ok, 2}, mongoose_elasticsearch:count(?IDX, <<"message">>,
                                                       #{query => #{term => #{user => <<"alice">>}}})),
    ?assertEqual(ok, mongoose_elasticsearch:delete_by_query(?IDX, <<"message">>,
                                                            #{query => #{term => #{user => <<"alice">>}}})),
    ?assertEqual({ok, 1}, mongoose_elasticsearch:count(?IDX, <<"message">>, #{})),
    ok = mongoose_elasticsearch:delete_by_query(?IDX, <<"message">>, #{query => #{match_all => #{}}}),
    ?assertEqual({ok, 0}, mongoose_elasticsearch:count(?IDX, <<"message">>, #{})).

server_errors_carry_status_and_body(_Config) ->
    {error, {404, Missing}} = mongoose_elasticsearch:search(<<"mn_missing">>, <<"message">>,
                                                            #{query => #{match_all => #{}}}),
    ?assertMatch(#{<<"status">> := 404,
                   <<"error">> := #{<<"type">> := <<"index_not_found_exception">>,
                                    <<"reason">> := <<"no such index [mn_missing]">>}}, Missing),
    ?assertMatch({error, {404, _}}, mongoose_elasticsearch:count(<<"mn_missing">>, <<"t">>, #{})),
    ?assertMatch({error, {400, #{<<"error">> := #{<<"type">> := <<"invalid_index_name_exception">>}}}},
                 mongoose_elasticsearch:insert_document(<<"Upper">>, <<"message">>, <<"1">>, #{})),
    {ok, _} = mongoose_elasticsearch:insert_document(?IDX, <<"message">>, <<"x">>, #{a => 1}),
    ?assertMatch({error, {400, #{<<"error">> := #{<<"type">> := <<"parsing_exception">>}}}},
                 mongoose_elasticsearch:search(?IDX, <<"message">>, #{query => #{nope => #{}}})),
    ?assertMatch({error, {400, #{<<"error">> := #{<<"type">> := <<"action_request_validation_exception">>}}}},
                 mongoose_elasticsearch:delete_by_query(?IDX, <<"message">>, #{})).

independent_client_passes(Config) ->
    Url = "http://127.0.0.1:" ++ integer_to_list(port_of(Config)),
    mn_test_venv:client_passes("es_client_check.py", [Url]).

%%--------------------------------------------------------------------
%% Failures (against an 8.x server)
%%--------------------------------------------------------------------

malformed_json_is_an_error(Config) ->
    fault(Config, "{\"mode\": \"garbage\", \"count\": 1}"),
    {error, {bad_response, Msg}} = mongoose_elasticsearch:health(),
    ?assertNotEqual(nomatch, binary:match(Msg, <<"not JSON">>)),
    %% 429 and 503 are answers with Elasticsearch's error body.
    fault(Config, "{\"mode\": \"status\", \"status\": 429, \"count\": 1}"),
    ?assertMatch({error, {429, #{<<"error">> := #{<<"type">> := <<"es_rejected_execution_exception">>}}}},
                 mongoose_elasticsearch:count(?IDX, <<"t">>, #{})),
    fault(Config, "{\"mode\": \"status\", \"status\": 503, \"count\": 1}"),
    ?assertMatch({error, {503, _}}, mongoose_elasticsearch:health()),
    ?assertMatch({ok, _}, mongoose_elasticsearch:health()).

dropped_connection_then_recovery(Config) ->
    fault(Config, "{\"mode\": \"drop\", \"count\": 1}"),
    {error, {connection_lost, Msg}} = mongoose_elasticsearch:health(),
    ?assertNotEqual(nomatch, binary:match(Msg, <<"GET http://127.0.0.1">>)),
    ?assertMatch({ok, #{<<"status">> := _}}, mongoose_elasticsearch:health()).

stall_times_out_within_call_timeout(Config) ->
    mongoose_wpool:stop(),
    {ok, _} = start_pool(port_of(Config), [{call_timeout, 500}, {workers, 1}], #{}),
    fault(Config, "{\"mode\": \"stall\", \"ms\": 3000, \"count\": 1}"),
    T0 = erlang:monotonic_time(millisecond),
    ?assertEqual({error, timeout}, mongoose_elasticsearch:health()),
    Took = erlang:monotonic_time(millisecond) - T0,
    ct:log("answered after ~p ms", [Took]),
    ?assert(Took >= 450 andalso Took < 1000),
    %% No late answer reaches the caller, and the single worker is free again.
    receive Late -> ct:fail({late_message, Late}) after 300 -> ok end,
    ?assertMatch({ok, _}, mongoose_elasticsearch:health()).

bad_requests_are_refused(_Config) ->
    Bad = fun(R) -> ?assertMatch({error, {bad_request, _}}, R), element(2, element(2, R)) end,
    Bad(mongoose_elasticsearch:insert_document(?IDX, <<"t">>, <<"1">>, {not_json, 1})),
    Bad(mongoose_elasticsearch:insert_document(?IDX, <<"t">>, <<"1">>, #{k => {1, 2}})),
    Bad(mongoose_elasticsearch:insert_document(?IDX, <<"t">>, <<"1">>, #{k => <<255>>})),
    Bad(mongoose_elasticsearch:insert_document(?IDX, <<"t">>, <<>>, #{})),
    Bad(mongoose_elasticsearch:search(42, <<"t">>, #{})),
    Bad(mongoose_elasticsearch:count(?IDX, <<"t">>, #{1 => 2})),
    ?assertMatch({error, {bad_request, _}},
                 mongoose_wpool:call(elastic, global, default, {drop_index, ?IDX})),
    ?assertMatch({ok, _}, mongoose_elasticsearch:health()).

server_down(_Config) ->
    mongoose_wpool:stop(),
    Private = start_server(["--version", "8.15.0"]),
    #{port := Port} = Private,
    {ok, _} = start_pool(Port, [], #{}),
    {ok, _} = mongoose_elasticsearch:health(),
    stop_server(Private),
    wait_until_closed(Port, 50),
    ?assertMatch({error, {connection_refused, _}}, mongoose_elasticsearch:health()),
    mongoose_wpool:stop(),
    {error, {connect_failed, Msg}} = start_pool(Port, [], #{}),
    ct:log("~s", [Msg]),
    ?assertNotEqual(nomatch, binary:match(Msg, <<"reading the server's version (GET /)">>)),
    ?assertEqual({error, {pool_not_started, {elastic, global, default}}},
                 mongoose_elasticsearch:health()).

wait_until_closed(_Port, 0) -> ct:fail(server_still_up);
wait_until_closed(Port, N) ->
    case gen_tcp:connect({127, 0, 0, 1}, Port, []) of
        {ok, S} -> gen_tcp:close(S), timer:sleep(100), wait_until_closed(Port, N - 1);
        {error, _} -> ok
    end.

not_elasticsearch_fails_the_start(_Config) ->
    mongoose_wpool:stop(),
    {ok, L} = gen_tcp:listen(0, [binary, {active, false}, {ip, {127, 0, 0, 1}}, {reuseaddr, true}]),
    {ok, Port} = inet:port(L),
    Body = <<"{\"tagline\": \"not a search engine\"}">>,
    Server = spawn_link(fun() -> answer_forever(L, Body) end),
    {error, {connect_failed, Msg}} = start_pool(Port, [], #{}),
    ?assertNotEqual(nomatch, binary:match(Msg, <<"no version.number">>)),
    unlink(Server),
    exit(Server, kill),
    gen_tcp:close(L).

answer_forever(L, Body) ->
    {ok, S} = gen_tcp:accept(L),
    {ok, _} = gen_tcp:recv(S, 0, 5000),
    Len = integer_to_binary(byte_size(Body)),
    gen_tcp:send(S, [<<"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: ">>,
                     Len, <<"\r\n\r\n">>, Body]),
    gen_tcp:close(S),
    answer_forever(L, Body).

basic_auth(_Config) ->
    mongoose_wpool:stop(),
    Secret = "canary-s3cret",
    Private = start_server(["--username", "elastic", "--password", Secret]),
    #{port := Port} = Private,
    try
        {ok, _} = start_pool(Port, [], #{username => "elastic", password => Secret}),
        ?assertMatch({ok, #{<<"status">> := _}}, mongoose_elasticsearch:health()),
        mongoose_wpool:stop(),
        {error, {connect_failed, Wrong}} =
            start_pool(Port, [], #{username => "elastic", password => "wrong-" ++ Secret}),
        ?assertNotEqual(nomatch, binary:match(Wrong, <<"connection.username and connection.password">>)),
        ?assertEqual(nomatch, binary:match(Wrong, list_to_binary(Secret))),
        {error, {connect_failed, None}} = start_pool(Port, [], #{}),
        ?assertNotEqual(nomatch, binary:match(None, <<"requires authentication">>))
    after
        stop_server(Private)
    end.

config_errors(Config) ->
    mongoose_wpool:stop(),
    Err = fun(Conn) ->
                  {error, {invalid_config, Msg}} =
                      mongoose_wpool:start(elastic, global, default, [], Conn),
                  Msg
          end,
    ?assertEqual(<<"outgoing_pools.elastic.default.connection.port: expected an integer "
                   "between 1 and 65535, got 0">>, Err(#{port => 0})),
    ?assertMatch(<<"outgoing_pools.elastic.default.connection.host: expected a host name", _/binary>>,
                 Err(#{host => "http://localhost:9200"})),
    NoUser = Err(#{password => "canary-s3cret"}),
    ?assertMatch(<<"outgoing_pools.elastic.default.connection.username: required", _/binary>>, NoUser),
    ?assertEqual(nomatch, binary:match(NoUser, <<"canary">>)),
    ?assertMatch(<<"outgoing_pools.elastic.default.connection.url: unknown option", _/binary>>,
                 Err(#{url => "x"})),
    %% Seed 000's legacy tuple, with its host and port.
    Legacy = {elastic, global, default, [], [{host, "127.0.0.1"}, {port, port_of(Config)}]},
    [{ok, _}] = mongoose_wpool:start_configured_pools([Legacy], []),
    ?assertMatch({ok, _}, mongoose_elasticsearch:health()).

callback_module(Config) ->
    mongoose_wpool:stop(),
    ok = mongoose_wpool_elastic:init(),
    ?assert(mongoose_wpool_elastic:is_supported_strategy(available_worker)),
    {ok, _} = mongoose_wpool_elastic:start(global, default, [{workers, 1}],
                                           #{host => "127.0.0.1", port => port_of(Config)}),
    ?assertMatch({ok, _}, mongoose_elasticsearch:health()),
    ok = mongoose_wpool_elastic:stop(global, default),
    ?assertMatch({error, {pool_not_started, _}}, mongoose_elasticsearch:health()).
